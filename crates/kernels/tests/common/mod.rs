//! What the kernel tests share: reproducible inputs, bf16 conversions through the `half`
//! crate (an implementation independent of the emulation's), and the error measure.

#![allow(dead_code)]

use davinci_kernels::emulated::Bf16;
use half::bf16;

pub use davinci_kernels::inputs::values;

pub fn to_bits(v: &[f32]) -> Vec<Bf16> {
    v.iter().map(|&f| bf16::from_f32(f).to_bits()).collect()
}

pub fn to_f32(v: &[Bf16]) -> Vec<f32> {
    v.iter().map(|&b| bf16::from_bits(b).to_f32()).collect()
}

pub fn bf16_nan() -> Bf16 {
    bf16::NAN.to_bits()
}

/// ||a - b|| / max(||b||, 1): relative for outputs of norm above 1, absolute below (some
/// gradients are zero in exact arithmetic). NaN anywhere fails: outputs are poisoned with
/// NaN first, so an element a kernel never writes shows up here.
pub fn relative_error(a: &[f32], b: &[f64]) -> f64 {
    assert!(a.iter().all(|v| v.is_finite()), "a non-finite output (an element left unwritten?)");
    let diff: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm.max(1.0)).sqrt()
}

/// A copy of `data` placed `misalign` elements past a 16-byte boundary (0: aligned for the
/// kernels' 16-byte accesses; otherwise their scalar twins run).
pub struct Placed<T> {
    storage: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Placed<T> {
    pub fn new(data: &[T], misalign: usize) -> Self {
        let size = std::mem::size_of::<T>();
        let storage = vec![T::default(); data.len() + 16];
        let base = storage.as_ptr() as usize;
        let start = (0..16).find(|s| (base + s * size) % 16 == (misalign * size) % 16).expect("an offset");
        let mut placed = Self { storage, start, len: data.len() };
        placed.get_mut().copy_from_slice(data);
        placed
    }

    pub fn get(&self) -> &[T] {
        &self.storage[self.start..self.start + self.len]
    }

    pub fn get_mut(&mut self) -> &mut [T] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// The kernels the emulation ran since the last call.
pub fn kernels_ran() -> Vec<String> {
    davinci_kernels::emulated::launches_ran().into_iter().map(|l| l.kernel).collect()
}
