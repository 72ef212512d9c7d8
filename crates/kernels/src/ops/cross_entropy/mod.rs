//! Cross-entropy over rows of f32 logits: the fused middle of the chunked linear +
//! cross-entropy in `davinci-model` (the matmuls around it are candle's, cuBLAS on a GPU).
//! Per row it gives the loss `logsumexp(x) - x[target]` and, when asked, the gradient
//! `softmax(x) - one_hot(target)` in the same pass. Kernel: `kernels/cross_entropy.cu`.
//! No autograd: the loss op that calls it hands the gradients back itself.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slice;

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "emulation")]
pub(crate) mod emulated;
#[cfg(any(feature = "cuda", feature = "emulation"))]
mod launch;

const NAME: &str = "cross-entropy";

/// Per-row losses, and the logits' gradient when it was asked for.
#[derive(Debug)]
pub struct RowLosses {
    /// `[rows]` f32.
    pub loss: Tensor,
    /// `[rows, vocab]` f32, `softmax - one_hot(target)` (for the sum of the row losses).
    pub d_logits: Option<Tensor>,
}

/// The cross-entropy of each row of `logits` (`[rows, vocab]`, f32) against `targets`
/// (`[rows]`, u32 vocabulary ids).
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor, with_grad: bool) -> Result<RowLosses> {
    let (rows, vocab) = logits.dims2()?;
    if logits.dtype() != DType::F32 || targets.dtype() != DType::U32 || targets.dims() != [rows] {
        bail!(
            "{NAME}: logits {:?} {:?} and targets {:?} {:?}; they must be f32 [rows, vocab] and u32 [rows]",
            logits.dims(),
            logits.dtype(),
            targets.dims(),
            targets.dtype()
        )
    }
    let packed =
        logits.contiguous()?.apply_op2_no_bwd(&targets.contiguous()?, &CrossEntropy { with_grad })?;
    if !with_grad {
        return Ok(RowLosses { loss: packed, d_logits: None });
    }
    let n = rows * vocab;
    Ok(RowLosses {
        loss: packed.narrow(0, n, rows)?,
        d_logits: Some(packed.narrow(0, 0, n)?.reshape((rows, vocab))?),
    })
}

struct CrossEntropy {
    with_grad: bool,
}

/// `[d_logits..., loss...]` with the gradient, `[loss...]` without.
fn rows_cpu(logits: &[f32], targets: &[u32], with_grad: bool) -> Result<Vec<f32>> {
    if !with_grad {
        return rows_of(logits, targets, row_loss);
    }
    let rows = targets.len();
    // Room for the losses appended below: growing the vector would double it.
    let mut d_logits = Vec::with_capacity(logits.len() + rows);
    d_logits.extend_from_slice(logits);
    let losses = cross_entropy_rows_in_place(&mut d_logits, targets, true)?;
    d_logits.extend_from_slice(&losses);
    Ok(d_logits)
}

/// The losses of the rows of `logits` (`[rows, vocab]` row-major f32), with `with_grad`
/// each row then overwritten with its gradient `softmax - one_hot(target)`: the CPU head's
/// middle step, which needs no second `[rows, vocab]` buffer. The same arithmetic as the
/// op's CPU body.
pub fn cross_entropy_rows_in_place(logits: &mut [f32], targets: &[u32], with_grad: bool) -> Result<Vec<f32>> {
    if !with_grad {
        return rows_of(logits, targets, row_loss);
    }
    let vocab = vocab_of(logits, targets)?;
    let mut losses = vec![0f32; targets.len()];
    losses.par_iter_mut().zip(logits.par_chunks_mut(vocab)).zip(targets.par_iter()).for_each(
        |((loss, x), &target)| {
            *loss = row_loss_in_place(x, target);
        },
    );
    Ok(losses)
}

/// The vocabulary of `[rows, vocab]` logits, with every target inside it.
fn vocab_of(logits: &[f32], targets: &[u32]) -> Result<usize> {
    let vocab = logits.len() / targets.len().max(1);
    if vocab * targets.len() != logits.len() {
        bail!("{NAME}: {} logits do not split into {} rows", logits.len(), targets.len())
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("{NAME}: target {t} outside a vocabulary of {vocab}")
    }
    Ok(vocab)
}

/// `loss(row, target)` of each row, on rayon's threads.
fn rows_of(logits: &[f32], targets: &[u32], loss: impl Fn(&[f32], u32) -> f32 + Sync) -> Result<Vec<f32>> {
    let vocab = vocab_of(logits, targets)?;
    let mut losses = vec![0f32; targets.len()];
    losses.par_iter_mut().zip(logits.par_chunks(vocab)).zip(targets.par_iter()).for_each(|((l, x), &t)| {
        *l = loss(x, t);
    });
    Ok(losses)
}

/// The row's maximum and the log of its exponentials' sum (shifted by the maximum).
/// Exponentials in f32 (each within an ulp), their sum and the log in f64.
fn row_log_sum(x: &[f32]) -> (f32, f64) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let sum: f64 = x.iter().map(|&v| (v - max).exp() as f64).sum();
    (max, sum.ln())
}

/// `logsumexp(x) - x[target]`, from [`row_log_sum`]'s figures.
fn loss_of(x: &[f32], target: u32, (max, log_sum): (f32, f64)) -> f32 {
    (log_sum - (x[target as usize] - max) as f64) as f32
}

fn row_loss(x: &[f32], target: u32) -> f32 {
    loss_of(x, target, row_log_sum(x))
}

fn row_loss_in_place(x: &mut [f32], target: u32) -> f32 {
    let (max, log_sum) = row_log_sum(x);
    let loss = loss_of(x, target, (max, log_sum));
    for v in x.iter_mut() {
        *v = ((*v - max) - log_sum as f32).exp();
    }
    x[target as usize] -= 1.0;
    loss
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (logits, targets) = (cpu_slice::<f32>(NAME, ls, ll)?, cpu_slice::<u32>(NAME, ts, tl)?);
        let out = rows_cpu(logits, targets, self.with_grad)?;
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ls: &candle_core::CudaStorage,
        ll: &Layout,
        ts: &candle_core::CudaStorage,
        tl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        cuda::rows(self.with_grad, (ls, ll), (ts, tl))
    }
}
