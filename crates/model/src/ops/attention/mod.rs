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

/// Which keys each query row sees: segment `i` pairs the query rows
/// `cu_q[i]..cu_q[i + 1]` with the key rows `cu_k[i]..cu_k[i + 1]`, causally and aligned at
/// the bottom right (as flash-attn's varlen call with `causal=True`): the query at offset
/// `t` of its segment sees the segment's keys `0..=t + (k_len - q_len)`. A packed row on
/// one rank has `cu_q == cu_k` (each document attends to itself); under context
/// parallelism a rank's query chunk sees its document's keys from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    cu_q: Vec<u32>,
    cu_k: Vec<u32>,
}

impl Segments {
    /// Checks the bounds: both start at 0, do not decrease, have as many segments, and no
    /// segment has fewer keys than queries.
    pub fn new(cu_q: Vec<u32>, cu_k: Vec<u32>) -> Result<Self> {
        let rising = |cu: &[u32]| cu.first() == Some(&0) && cu.windows(2).all(|w| w[0] <= w[1]);
        if !rising(&cu_q) || !rising(&cu_k) || cu_q.len() != cu_k.len() {
            return Err(ModelError::Packing(format!(
                "query bounds {cu_q:?} and key bounds {cu_k:?} must start at 0, not decrease and name as many segments"
            )));
        }
        let lens = |cu: &[u32], i: usize| cu[i + 1] - cu[i];
        if let Some(i) = (0..cu_q.len() - 1).find(|&i| lens(&cu_k, i) < lens(&cu_q, i)) {
            return Err(ModelError::Packing(format!(
                "segment {i} has {} queries but only {} keys",
                lens(&cu_q, i),
                lens(&cu_k, i)
            )));
        }
        Ok(Self { cu_q, cu_k })
    }

    /// Each document of a packed row attending to itself.
    pub fn documents(cu_seqlens: &[u32]) -> Self {
        Self { cu_q: cu_seqlens.to_vec(), cu_k: cu_seqlens.to_vec() }
    }

    pub fn cu_q(&self) -> &[u32] {
        &self.cu_q
    }

    pub fn cu_k(&self) -> &[u32] {
        &self.cu_k
    }

    /// `(query rows, key rows)` of every segment.
    pub fn iter(&self) -> impl Iterator<Item = (std::ops::Range<usize>, std::ops::Range<usize>)> + '_ {
        let range = |w: &[u32]| w[0] as usize..w[1] as usize;
        self.cu_q.windows(2).zip(self.cu_k.windows(2)).map(move |(q, k)| (range(q), range(k)))
    }

    fn ends(&self) -> (usize, usize) {
        let last = |cu: &[u32]| cu.last().map_or(0, |&e| e as usize);
        (last(&self.cu_q), last(&self.cu_k))
    }
}

/// Causal attention for one packed row: each document attends to itself (see
/// [`attention`]).
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
    attention(q, k, v, &Segments::documents(cu_seqlens), scale)
}

/// Causal attention of query segments on key segments ([`Segments`]): `q`
/// `[q_tokens, q_heads, head_dim]`, `k` and `v` `[k_tokens, kv_heads, head_dim]`, the
/// segments covering both. Returns `[q_tokens, q_heads, head_dim]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, segments: &Segments, scale: f64) -> Result<Tensor> {
    let (tokens, q_heads, head_dim) = q.dims3()?;
    let (kv_tokens, kv_heads, kv_dim) = k.dims3()?;
    if kv_dim != head_dim || v.dims() != k.dims() || q_heads % kv_heads != 0 {
        return Err(ModelError::Packing(format!(
            "attention shapes do not fit: q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    if segments.ends() != (tokens, kv_tokens) {
        return Err(ModelError::Packing(format!(
            "segments ending at {:?} do not cover {tokens} queries and {kv_tokens} keys",
            segments.ends()
        )));
    }
    if q.device().is_cuda() && q.dtype() == DType::BF16 && HEAD_DIMS.contains(&head_dim) {
        Ok(davinci_kernels::ops::flash_attention(q, k, v, segments.cu_q(), segments.cu_k(), scale)?)
    } else if q.device().is_cpu() && q.dtype() == DType::F32 {
        tiled::attention(q, k, v, segments, scale, None)
    } else {
        reference::attention(q, k, v, segments, scale)
    }
}
