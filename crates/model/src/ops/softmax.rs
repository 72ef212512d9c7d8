//! A softmax that keeps the gradient tape (candle-nn's fast softmax does not).

use candle_core::{Tensor, D};

use crate::error::Result;

/// Softmax over the last dimension, computed in the input's dtype.
///
/// The row maximum is subtracted for stability and detached: softmax does not depend on
/// the shift, so the gradient stays exact while the tape stays short.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    Ok(exp.broadcast_div(&sum)?)
}
