//! The loss rows under the emulation, over host slices, through the same launch as the
//! device.

use candle_core::{bail, Result};

use super::launch::{self, Buffers};
use crate::emulated::{check, Host};
use crate::launch::Buffer;

/// Per-row cross-entropy of f32 `logits` (`[rows, vocab]`) against `targets`, with the
/// gradient `softmax - one_hot` into `d_logits` when given.
pub fn cross_entropy_rows(
    logits: &[f32],
    targets: &[u32],
    d_logits: Option<&mut [f32]>,
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
    let buffers = Buffers {
        logits: Buffer::host(logits),
        targets: Buffer::host(targets),
        d_logits: d_logits.map(Buffer::host_mut),
        loss: Buffer::host_mut(loss),
    };
    launch::rows(&mut Host::default(), buffers, rows, vocab)
}
