//! The loss rows under the emulation, over host slices, through the same launches as the
//! device.

use candle_core::{bail, Result};

use super::launch::{self, Grad, Rows};
use crate::emulated::{check, Element, Host};
use crate::launch::Buffer;

/// Per-row cross-entropy of `logits` (`[rows, vocab]`, f32 or bf16 bits) against
/// `targets` into `loss` (f32), with the gradient `softmax - one_hot` into `d_logits` (in
/// the logits' dtype) when given.
pub fn cross_entropy_rows<T: Element>(
    logits: &[T],
    targets: &[u32],
    d_logits: Option<&mut [T]>,
    loss: &mut [f32],
    vocab: usize,
) -> Result<()> {
    let rows = targets.len();
    check("logits", logits.len(), rows * vocab)?;
    check("loss", loss.len(), rows)?;
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("target {t} outside a vocabulary of {vocab}")
    }
    if let Some(d) = &d_logits {
        check("d_logits", d.len(), rows * vocab)?;
    }
    let mut lse = vec![f32::NAN; rows];
    let mut exec = Host::default();
    let buffers = Rows {
        logits: Buffer::host(logits),
        targets: Buffer::host(targets),
        loss: Buffer::host_mut(loss),
        lse: Buffer::host_mut(&mut lse),
    };
    launch::rows(&mut exec, T::ELEMENT, buffers, rows, vocab)?;
    let Some(d_logits) = d_logits else { return Ok(()) };
    let buffers = Grad {
        logits: Buffer::host(logits),
        targets: Buffer::host(targets),
        lse: Buffer::host(&lse),
        d_logits: Buffer::host_mut(d_logits),
    };
    launch::grad(&mut exec, T::ELEMENT, buffers, rows, vocab)
}
