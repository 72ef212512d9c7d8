//! Cross-entropy over rows of f32 logits: the fused middle of the chunked linear +
//! cross-entropy in `davinci-model` (the matmuls around it are candle's, cuBLAS on a GPU).
//! Per row it gives the loss `logsumexp(x) - x[target]` and, when asked, the gradient
//! `softmax(x) - one_hot(target)` in the same pass. Kernel: `kernels/cross_entropy.cu`.
//! No autograd: the loss op that calls it hands the gradients back itself.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_slice;
use crate::simd::{exp, isa, Isa};

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
        return row_losses(logits, targets);
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
        return row_losses(logits, targets);
    }
    let vocab = vocab_of(logits, targets)?;
    let isa = isa();
    let mut losses = vec![0f32; targets.len()];
    losses.par_iter_mut().zip(logits.par_chunks_mut(vocab)).zip(targets.par_iter()).for_each(
        |((loss, x), &target)| {
            *loss = row_loss_in_place(isa, x, target);
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

/// The loss of each row, on rayon's threads.
fn row_losses(logits: &[f32], targets: &[u32]) -> Result<Vec<f32>> {
    let vocab = vocab_of(logits, targets)?;
    let isa = isa();
    let mut losses = vec![0f32; targets.len()];
    losses.par_iter_mut().zip(logits.par_chunks(vocab)).zip(targets.par_iter()).for_each(|((l, x), &t)| {
        *l = row_loss(isa, x, t);
    });
    Ok(losses)
}

/// Accumulators of a row's reductions: their fixed order makes a row's sum the same
/// every run, and lets LLVM keep them in vector registers.
const LANES: usize = 16;

crate::dispatch! {
    /// The row's maximum and the log of its exponentials' sum (shifted by the maximum):
    /// the exponentials in f32 (each within about an ulp), their sum and the log in f64.
    row_log_sum => row_log_sum_body(x: &[f32], out: &mut (f32, f64))
}

#[inline(always)]
fn row_log_sum_body<const FMA: bool>(x: &[f32], out: &mut (f32, f64)) {
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks.clone() {
        for (m, &v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v);
        }
    }
    let max = lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sums = [0f64; LANES];
    for chunk in chunks {
        for (s, &v) in sums.iter_mut().zip(chunk) {
            *s += f64::from(exp::<FMA>(v - max));
        }
    }
    let tail_sum: f64 = tail.iter().map(|&v| f64::from(exp::<FMA>(v - max))).sum();
    *out = (max, (sums.iter().sum::<f64>() + tail_sum).ln());
}

crate::dispatch! {
    /// Each value `v` of the row replaced by `e^(v - shift)`.
    exp_shifted => exp_shifted_body(x: &mut [f32], shift: f32)
}

#[inline(always)]
fn exp_shifted_body<const FMA: bool>(x: &mut [f32], shift: f32) {
    for v in x.iter_mut() {
        *v = exp::<FMA>(*v - shift);
    }
}

/// `logsumexp(x) - x[target]`, from [`row_log_sum`]'s figures.
fn loss_of(x: &[f32], target: u32, (max, log_sum): (f32, f64)) -> f32 {
    (log_sum - (x[target as usize] - max) as f64) as f32
}

fn log_sum_of(isa: Isa, x: &[f32]) -> (f32, f64) {
    let mut out = (0.0, 0.0);
    row_log_sum(isa, x, &mut out);
    out
}

fn row_loss(isa: Isa, x: &[f32], target: u32) -> f32 {
    loss_of(x, target, log_sum_of(isa, x))
}

fn row_loss_in_place(isa: Isa, x: &mut [f32], target: u32) -> f32 {
    let (max, log_sum) = log_sum_of(isa, x);
    let loss = loss_of(x, target, (max, log_sum));
    // `(v - max) - log_sum` as one shift: the same within an ulp of the exponent's argument.
    exp_shifted(isa, x, max + log_sum as f32);
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
