//! RMSNorm as transformers' `Qwen2RMSNorm` computes it: normalise in f32, cast back to the
//! input's dtype, then scale by the weight. The fused op lives in `davinci-kernels`.

use candle_core::Tensor;

use crate::error::Result;

/// `weight * (x / sqrt(mean(x^2, last dim) + eps))`, for `x` of any rank.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(davinci_kernels::ops::rms_norm(x, weight, eps)?)
}

/// The residual add and the norm after it, fused: `(x + residual, rms_norm(x + residual))`.
pub fn add_rms_norm(x: &Tensor, residual: &Tensor, weight: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    Ok(davinci_kernels::ops::add_rms_norm(x, residual, weight, eps)?)
}
