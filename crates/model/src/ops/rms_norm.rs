//! RMSNorm as transformers' `Qwen2RMSNorm` computes it: normalise in f32, cast back to the
//! input's dtype, then scale by the weight.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// `weight * (x / sqrt(mean(x^2, last dim) + eps))`, for `x` of any rank.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x32 = x.to_dtype(DType::F32)?;
    let mean_square = x32.sqr()?.mean_keepdim(D::Minus1)?;
    let inv_rms = (mean_square + eps)?.sqrt()?.recip()?;
    let normed = x32.broadcast_mul(&inv_rms)?.to_dtype(dtype)?;
    Ok(normed.broadcast_mul(weight)?)
}
