//! The LM head and its loss, fused and chunked: `hidden @ weight^T` followed by
//! cross-entropy, over chunks of tokens, so that the `[tokens x vocab]` logits never exist
//! at once (at 32K tokens and Qwen's 152K vocabulary they would take 20 GB in f32).
//!
//! The gradients with respect to the hidden states and the head weight are computed in
//! the same chunked pass (as Liger-Kernel's fused linear cross-entropy does), so the
//! backward costs no second pass over the vocabulary. Between the two matmuls of a chunk,
//! the loss and the logits' gradient come from one fused op (`davinci-kernels`'
//! `cross_entropy_rows`, CUDA kernels on a GPU).
//!
//! On the CPU the loop computes in f32 over its own buffers (`head_cpu`). Elsewhere it is
//! tensor ops (`head_chunks`), in bf16 when the hidden states and the weight are bf16, so
//! that the products run on tensor cores, with the losses, their sum and the weight
//! gradient's sum over chunks kept in f32 (`head_chunks` says why and what exactly);
//! otherwise in f32.

use candle_core::{CpuStorage, DType, Layout, Shape, Tensor};

use super::head_chunks::{chunk_dtype, linear_cross_entropy_chunks};
use super::head_cpu::linear_cross_entropy_cpu;
use crate::error::{ModelError, Result};

/// The label of a position that carries no loss, as in transformers.
pub const IGNORE_INDEX: i64 = -100;

/// How many bytes of f32 logits one chunk may hold.
const CHUNK_LOGIT_BYTES: usize = 256 << 20;

/// Result of [`linear_cross_entropy`].
#[derive(Debug)]
pub struct CrossEntropyOutput {
    /// Sum of the per-token losses over the counted positions.
    pub loss_sum: f64,
    /// Positions whose label is not [`IGNORE_INDEX`].
    pub count: usize,
    /// d(loss_sum)/d(hidden), `[tokens, hidden]` f32; rows of ignored positions are 0.
    pub d_hidden: Option<Tensor>,
    /// d(loss_sum)/d(weight), `[vocab, hidden]` f32.
    pub d_weight: Option<Tensor>,
}

impl CrossEntropyOutput {
    /// Mean loss over counted positions; 0 when there are none.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.loss_sum / self.count as f64
        }
    }
}

/// Default number of tokens per chunk for a vocabulary size.
pub fn default_chunk_tokens(vocab: usize) -> usize {
    (CHUNK_LOGIT_BYTES / (4 * vocab.max(1))).max(16)
}

/// Cross-entropy of `hidden @ weight^T` (`hidden`: `[tokens, H]`, `weight`: `[V, H]`)
/// against `labels` (one per token, already shifted: `labels[t]` is the target of
/// position `t`), summed over positions whose label is not -100. Computes in f32, except
/// on a GPU with bf16 `hidden` and `weight`, whose products and logits stay bf16 (the
/// module's doc). With `with_grads`, also returns the gradients of that sum, in f32.
pub fn linear_cross_entropy(
    hidden: &Tensor,
    weight: &Tensor,
    labels: &[i64],
    chunk_tokens: Option<usize>,
    with_grads: bool,
) -> Result<CrossEntropyOutput> {
    let (tokens, _) = hidden.dims2()?;
    let vocab = weight.dim(0)?;
    if labels.len() != tokens {
        return Err(ModelError::Labels(format!("{} labels for {tokens} tokens", labels.len())));
    }
    let mut counted = Vec::new();
    let mut targets = Vec::new();
    for (t, &label) in labels.iter().enumerate() {
        if label == IGNORE_INDEX {
            continue;
        }
        if label < 0 || label as usize >= vocab {
            return Err(ModelError::Labels(format!(
                "label {label} at position {t} is outside the vocabulary (size {vocab}) and is not -100"
            )));
        }
        counted.push(t as u32);
        targets.push(label as u32);
    }
    let (hidden, weight) = (hidden.detach(), weight.detach());
    let chunk = chunk_tokens.unwrap_or_else(|| default_chunk_tokens(vocab)).max(1);
    let (loss_sum, grads) = if hidden.device().is_cpu() {
        let (hidden, weight) = (hidden.to_dtype(DType::F32)?, weight.to_dtype(DType::F32)?);
        linear_cross_entropy_cpu(&hidden, &weight, &counted, &targets, chunk, with_grads)?
    } else {
        let dtype = chunk_dtype(hidden.dtype(), weight.dtype());
        let (hidden, weight) = (hidden.to_dtype(dtype)?, weight.to_dtype(dtype)?);
        linear_cross_entropy_chunks(&hidden, &weight, &counted, &targets, chunk, with_grads)?
    };
    let (d_hidden, d_weight) = grads.unzip();
    Ok(CrossEntropyOutput { loss_sum, count: counted.len(), d_hidden, d_weight })
}

/// The mean loss as a scalar tensor on the gradient tape: its backward hands
/// `hidden` and `weight` the gradients computed by [`linear_cross_entropy`].
pub fn mean_cross_entropy_loss(
    hidden: &Tensor,
    weight: &Tensor,
    labels: &[i64],
    chunk_tokens: Option<usize>,
) -> Result<Tensor> {
    let needs_grad = hidden.track_op() || weight.track_op();
    let out = linear_cross_entropy(hidden, weight, labels, chunk_tokens, needs_grad)?;
    let scale = if out.count == 0 { 0.0 } else { 1.0 / out.count as f64 };
    let mean = out.mean() as f32;
    match (out.d_hidden, out.d_weight) {
        (Some(d_hidden), Some(d_weight)) => {
            Ok(hidden.apply_op2(weight, PrecomputedLoss { value: mean, scale, d_hidden, d_weight })?)
        }
        _ => Ok(Tensor::new(mean, hidden.device())?),
    }
}

/// A scalar whose value and gradients were computed ahead, in the chunked pass: the
/// gradients of the loss sum, which the backward scales to the mean's (and by the
/// incoming gradient) in one pass over each.
struct PrecomputedLoss {
    value: f32,
    scale: f64,
    d_hidden: Tensor,
    d_weight: Tensor,
}

impl candle_core::CustomOp2 for PrecomputedLoss {
    fn name(&self) -> &'static str {
        "linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![self.value]), Shape::from(())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        hidden: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let device = &hidden.device;
        let value = device.clone_htod(&[self.value])?;
        Ok((candle_core::CudaStorage::wrap_cuda_slice(value, device.clone()), Shape::from(())))
    }

    fn bwd(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        _loss: &Tensor,
        grad_loss: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = (grad_loss.to_dtype(DType::F32)? * self.scale)?;
        let d_hidden = self.d_hidden.broadcast_mul(&grad)?.to_dtype(hidden.dtype())?;
        let d_weight = self.d_weight.broadcast_mul(&grad)?.to_dtype(weight.dtype())?;
        Ok((Some(d_hidden), Some(d_weight)))
    }
}
