//! The gated activation of Qwen2.5's MLP.

use candle_core::Tensor;

use crate::error::Result;

/// `silu(gate) * up`, elementwise.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok((gate.silu()? * up)?)
}
