//! Cross-entropy over rows of logits (f32 or bf16, the arithmetic in f32): the fused
//! middle of the chunked linear + cross-entropy in `davinci-model` (the matmuls around it
//! are candle's, cuBLAS on a GPU). Per row it gives the loss `logsumexp(x) - x[target]`
//! (f32) and, when asked, the gradient `softmax(x) - one_hot(target)` in the logits' dtype.
//! Two ops, as two kernels (`kernels/cross_entropy.cu`): the losses with each row's
//! log-sum-exp, then the gradient from those; each reads the logits once. Two because the
//! outputs differ in dtype for bf16 logits (a candle op has one output), and because the
//! gradient, elementwise once the log-sum-exp is known, can then spread a row over many
//! blocks. No autograd: the loss op that calls it hands the gradients back itself.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use half::bf16;
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
    /// `[rows, vocab]` in the logits' dtype, `softmax - one_hot(target)` (for the sum of
    /// the row losses).
    pub d_logits: Option<Tensor>,
}

/// The cross-entropy of each row of `logits` (`[rows, vocab]`, f32 or bf16) against
/// `targets` (`[rows]`, u32 vocabulary ids).
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor, with_grad: bool) -> Result<RowLosses> {
    let (rows, vocab) = logits.dims2()?;
    if !matches!(logits.dtype(), DType::F32 | DType::BF16)
        || targets.dtype() != DType::U32
        || targets.dims() != [rows]
    {
        bail!(
            "{NAME}: logits {:?} {:?} and targets {:?} {:?}; they must be f32 or bf16 [rows, vocab] and u32 [rows]",
            logits.dims(),
            logits.dtype(),
            targets.dims(),
            targets.dtype()
        )
    }
    let (logits, targets) = (logits.contiguous()?, targets.contiguous()?);
    let packed = logits.apply_op2_no_bwd(&targets, &Losses)?;
    let loss = packed.narrow(0, 0, rows)?;
    if !with_grad {
        return Ok(RowLosses { loss, d_logits: None });
    }
    let lse = packed.narrow(0, rows, rows)?;
    let d_logits = logits.apply_op3_no_bwd(&targets, &lse, &Gradient)?;
    debug_assert_eq!(d_logits.dims(), [rows, vocab]);
    Ok(RowLosses { loss, d_logits: Some(d_logits) })
}

/// Inputs (logits, targets); output `[loss..., lse...]`, f32.
struct Losses;

/// Inputs (logits, targets, lse); output the gradient `[rows, vocab]` in the logits' dtype.
struct Gradient;

/// The logits as f32: borrowed when they are, widened from bf16.
fn logits_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<std::borrow::Cow<'a, [f32]>> {
    Ok(match storage {
        CpuStorage::F32(_) => cpu_slice::<f32>(NAME, storage, layout)?.into(),
        CpuStorage::BF16(_) => cpu_slice::<bf16>(NAME, storage, layout)?
            .par_iter()
            .map(|v| v.to_f32())
            .collect::<Vec<_>>()
            .into(),
        other => {
            use candle_core::backend::BackendStorage;
            bail!("{NAME}: logits of {:?}; they must be f32 or bf16", other.dtype())
        }
    })
}

/// Each row's loss, then each row's log-sum-exp.
fn losses_and_lse(logits: &[f32], targets: &[u32]) -> Result<Vec<f32>> {
    let vocab = vocab_of(logits, targets)?;
    let isa = isa();
    let rows = targets.len();
    let mut out = vec![0f32; 2 * rows];
    let (loss, lse) = out.split_at_mut(rows);
    loss.par_iter_mut()
        .zip(lse.par_iter_mut())
        .zip(logits.par_chunks(vocab.max(1)))
        .zip(targets.par_iter())
        .for_each(|(((loss, lse), x), &target)| {
            let sums = log_sum_of(isa, x);
            (*loss, *lse) = (loss_of(x, target, sums), lse_of(sums));
        });
    Ok(out)
}

/// Each row of `logits` replaced by its gradient, from the rows' log-sum-exp.
fn gradient_in_place(logits: &mut [f32], targets: &[u32], lse: &[f32]) -> Result<()> {
    let vocab = vocab_of(logits, targets)?;
    if lse.len() != targets.len() {
        bail!("{NAME}: {} log-sum-exps for {} rows", lse.len(), targets.len())
    }
    let isa = isa();
    logits
        .par_chunks_mut(vocab.max(1))
        .zip(targets.par_iter())
        .zip(lse.par_iter())
        .for_each(|((x, &target), &lse)| row_gradient_in_place(isa, x, target, lse));
    Ok(())
}

/// The losses of the rows of `logits` (`[rows, vocab]` row-major f32), with `with_grad`
/// each row then overwritten with its gradient `softmax - one_hot(target)`: the CPU head's
/// middle step, which needs no second `[rows, vocab]` buffer. The same arithmetic as the
/// ops' CPU bodies.
pub fn cross_entropy_rows_in_place(logits: &mut [f32], targets: &[u32], with_grad: bool) -> Result<Vec<f32>> {
    if !with_grad {
        return row_losses(logits, targets);
    }
    let vocab = vocab_of(logits, targets)?;
    let isa = isa();
    let mut losses = vec![0f32; targets.len()];
    losses.par_iter_mut().zip(logits.par_chunks_mut(vocab.max(1))).zip(targets.par_iter()).for_each(
        |((loss, x), &target)| {
            let sums = log_sum_of(isa, x);
            *loss = loss_of(x, target, sums);
            row_gradient_in_place(isa, x, target, lse_of(sums));
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
    losses.par_iter_mut().zip(logits.par_chunks(vocab.max(1))).zip(targets.par_iter()).for_each(
        |((l, x), &t)| {
            *l = row_loss(isa, x, t);
        },
    );
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

/// The log-sum-exp from [`row_log_sum`]'s figures, in f32: the shift that turns a row
/// into its softmax, `(v - max) - log_sum` as one subtraction (the same within an ulp of
/// the exponent's argument).
fn lse_of((max, log_sum): (f32, f64)) -> f32 {
    max + log_sum as f32
}

/// The row `x` replaced by `softmax(x) - one_hot(target)`, from its log-sum-exp.
fn row_gradient_in_place(isa: Isa, x: &mut [f32], target: u32, lse: f32) {
    exp_shifted(isa, x, lse);
    x[target as usize] -= 1.0;
}

impl CustomOp2 for Losses {
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
        let out = losses_and_lse(&logits_f32(ls, ll)?, cpu_slice::<u32>(NAME, ts, tl)?)?;
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
        use candle_core::backend::BackendStorage;
        let out = crate::cuda::by_cuda_dtype!(NAME, ls.dtype(), cuda::rows((ls, ll), (ts, tl)))?;
        Ok((out, Shape::from(2 * tl.shape().elem_count())))
    }
}

impl CustomOp3 for Gradient {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (targets, lse) = (cpu_slice::<u32>(NAME, ts, tl)?, cpu_slice::<f32>(NAME, ss, sl)?);
        let mut d = logits_f32(ls, ll)?.into_owned();
        gradient_in_place(&mut d, targets, lse)?;
        let d = match ls {
            CpuStorage::BF16(_) => CpuStorage::BF16(d.par_iter().map(|&v| bf16::from_f32(v)).collect()),
            _ => CpuStorage::F32(d),
        };
        Ok((d, ll.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ls: &candle_core::CudaStorage,
        ll: &Layout,
        ts: &candle_core::CudaStorage,
        tl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let d = crate::cuda::by_cuda_dtype!(NAME, ls.dtype(), cuda::grad((ls, ll), (ts, tl), (ss, sl)))?;
        Ok((d, ll.shape().clone()))
    }
}
