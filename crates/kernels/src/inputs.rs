//! Reproducible inputs for the kernels' tests and benchmarks: an xorshift stream, so the
//! same seed gives the same values on every machine.

use candle_core::{DType, Device, Result, Tensor};

/// `n` values spread over `-range..range` from an xorshift stream keyed by `seed`.
pub fn values(n: usize, seed: u64, range: f64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 * range - range) as f32
        })
        .collect()
}

/// A tensor of [`values`] in `-2..2`, of the given shape, dtype and device.
pub fn tensor(shape: &[usize], seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(values(shape.iter().product(), seed, 2.0), shape, device)?.to_dtype(dtype)
}
