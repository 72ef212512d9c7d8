//! Rotary position embedding with per-document positions.

use candle_core::{DType, Device, Tensor, D};

use crate::error::Result;

/// The cos/sin tables of one packed row, `[tokens, head_dim]` each, computed as
/// transformers does (f32 inverse frequencies, angle = position * frequency, the half
/// table repeated twice).
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    pub fn new(positions: &[u32], head_dim: usize, theta: f64, device: &Device) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        let mut angles = Vec::with_capacity(positions.len() * head_dim);
        for &p in positions {
            let row: Vec<f32> = inv_freq.iter().map(|f| p as f32 * f).collect();
            angles.extend_from_slice(&row);
            angles.extend_from_slice(&row);
        }
        let angles = Tensor::from_vec(angles, (positions.len(), head_dim), device)?;
        Ok(Self { cos: angles.cos()?, sin: angles.sin()? })
    }

    /// Rotates `x` of shape `[tokens, heads, head_dim]`: `x * cos + rotate_half(x) * sin`,
    /// where `rotate_half([a, b]) = [-b, a]` over the two halves of the head dimension.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let cos = self.cos.to_dtype(dtype)?.unsqueeze(1)?;
        let sin = self.sin.to_dtype(dtype)?.unsqueeze(1)?;
        let half = x.dim(D::Minus1)? / 2;
        let first = x.narrow(D::Minus1, 0, half)?;
        let second = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }

    pub fn dtype(&self) -> DType {
        self.cos.dtype()
    }
}
