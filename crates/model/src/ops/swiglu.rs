//! The gated activation of Qwen2.5's MLP; the fused op lives in `davinci-kernels`.

use candle_core::Tensor;

use crate::error::Result;

/// `silu(gate) * up`, elementwise.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok(davinci_kernels::ops::swiglu(gate, up)?)
}
