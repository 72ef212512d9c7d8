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
