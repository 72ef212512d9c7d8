//! Rotary position embedding with per-document positions.

use candle_core::{DType, Device, Tensor};

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
    /// where `rotate_half([a, b]) = [-b, a]` over the two halves of the head dimension
    /// (the fused op of `davinci-kernels`, in transformers' rounding order).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(davinci_kernels::ops::rope(x, &self.cos, &self.sin)?)
    }

    /// The cos table, `[tokens, head_dim]` f32.
    pub fn cos(&self) -> &Tensor {
        &self.cos
    }

    /// The sin table, `[tokens, head_dim]` f32.
    pub fn sin(&self) -> &Tensor {
        &self.sin
    }

    pub fn dtype(&self) -> DType {
        self.cos.dtype()
    }
}
