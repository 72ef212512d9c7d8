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
    let rows = targets.len();
    let vocab = logits.len() / rows.max(1);
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        bail!("{NAME}: target {t} outside a vocabulary of {vocab}")
    }
    let mut losses = vec![0f32; rows];
    // Room for the losses appended below: growing the vector would double it.
    let mut d_logits = Vec::with_capacity(if with_grad { logits.len() + rows } else { 0 });
    d_logits.resize(if with_grad { logits.len() } else { 0 }, 0f32);
    let row_loss = |x: &[f32], target: u32, d: Option<&mut [f32]>| {
        // Exponentials in f32 (each within an ulp), their sum and the log in f64.
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum: f64 = x.iter().map(|&v| (v - max).exp() as f64).sum();
        let log_sum = sum.ln();
        if let Some(d) = d {
            for (d, &v) in d.iter_mut().zip(x) {
                *d = ((v - max) - log_sum as f32).exp();
            }
            d[target as usize] -= 1.0;
        }
        (log_sum - (x[target as usize] - max) as f64) as f32
    };
    if with_grad {
        losses.par_iter_mut().zip(d_logits.par_chunks_mut(vocab)).enumerate().for_each(|(r, (loss, d))| {
            *loss = row_loss(&logits[r * vocab..(r + 1) * vocab], targets[r], Some(d));
        });
        d_logits.extend_from_slice(&losses);
        Ok(d_logits)
    } else {
        losses.par_iter_mut().enumerate().for_each(|(r, loss)| {
            *loss = row_loss(&logits[r * vocab..(r + 1) * vocab], targets[r], None);
        });
        Ok(losses)
    }
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
