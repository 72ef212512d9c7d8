//! Causal attention over packed variable-length documents, with grouped-query heads.
//!
//! Two implementations with one meaning: [`reference`] builds each document's scores from
//! candle primitives on the gradient tape (any device, any dtype; the tests' yardstick),
//! and [`tiled`] is the CPU path used in training, which visits a block of queries at a
//! time with an explicit backward that recomputes probabilities from the saved
//! log-sum-exp, as flash-attention does. On a GPU, bf16 rows with head_dim 64 or 128 run
//! the flash-attention kernels of `davinci-kernels`.

pub mod reference;
pub mod tiled;

use candle_core::{DType, Tensor};
use davinci_kernels::attention::HEAD_DIMS;

use crate::error::{ModelError, Result};

/// Causal attention for one packed row.
///
/// `q`: `[tokens, q_heads, head_dim]`, `k` and `v`: `[tokens, kv_heads, head_dim]`, with
/// `q_heads` a multiple of `kv_heads` (query head `h` reads key/value head
/// `h / (q_heads / kv_heads)`, as transformers' `repeat_kv` lays them out). Documents are
/// the ranges `cu_seqlens[i]..cu_seqlens[i + 1]`, which must cover the row; a token
/// attends to itself and the earlier tokens of its own document only. Returns
/// `[tokens, q_heads, head_dim]`.
pub fn varlen_causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens: &[u32],
    scale: f64,
) -> Result<Tensor> {
    let (tokens, q_heads, head_dim) = q.dims3()?;
    let (kv_tokens, kv_heads, kv_dim) = k.dims3()?;
    if kv_tokens != tokens || kv_dim != head_dim || v.dims() != k.dims() || q_heads % kv_heads != 0 {
        return Err(ModelError::Packing(format!(
            "attention shapes do not fit: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    if cu_seqlens.last().map(|&end| end as usize) != Some(tokens) {
        return Err(ModelError::Packing(format!("cu_seqlens {cu_seqlens:?} do not cover {tokens} tokens")));
    }
    if q.device().is_cuda() && q.dtype() == DType::BF16 && HEAD_DIMS.contains(&head_dim) {
        Ok(davinci_kernels::ops::flash_attention(q, k, v, cu_seqlens, cu_seqlens, scale)?)
    } else if q.device().is_cpu() && q.dtype() == DType::F32 {
        tiled::attention(q, k, v, cu_seqlens, scale, None)
    } else {
        reference::attention(q, k, v, cu_seqlens, scale)
    }
}
