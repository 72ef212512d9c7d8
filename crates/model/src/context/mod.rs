//! Context parallelism: the tokens of one packed row spread over the `N` ranks of a
//! context group ([`ContextSplit`]), each rank running the layers on its own tokens only.
//!
//! Attention is the one place the ranks need each other: a query sees the keys of its
//! document from the document's start, and those may live on other ranks. Each layer
//! all-gathers the group's keys and values (with grouped-query attention they are 2 x 8 x
//! 128 = 2,048 values per token on Qwen2.5-32B/72B, against 5,120/8,192 for the hidden
//! state) and gives every local query chunk a copy of its document's keys up to the
//! chunk's end; attention then runs on query and key segments of different lengths
//! ([`crate::ops::Segments`]), exactly. The backward sums each key's gradient over the
//! ranks whose queries saw it and returns it to its owner: a reduce-scatter, the
//! all-gather's transpose. See `docs/distributed.md`.

mod split;

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

pub use split::{causal_work, Balance, ContextSplit, Piece, TOLERANCE};

use crate::error::{ModelError, Result};
use crate::ops::Segments;

/// The collectives of a context group, as the model needs them. The trainer implements it
/// over its communicators; the model never sees them (as with [`crate::WeightSource`]).
pub trait KeyValueExchange: Send + Sync {
    /// Ranks in the group.
    fn ranks(&self) -> usize;
    /// `local` (`[rows, width]`, the same shape on every rank of the group): every rank's,
    /// stacked in rank order, `[ranks * rows, width]`.
    fn all_gather(&self, local: &Tensor) -> Result<Tensor>;
    /// `blocks` (`[ranks * rows, width]`): the sum over the group of block `rank`,
    /// `[rows, width]`.
    fn reduce_scatter(&self, blocks: &Tensor) -> Result<Tensor>;
}

/// What a rank needs to attend across its group: the exchange, and for each of its query
/// segments the rows of the gathered keys it sees.
#[derive(Clone)]
pub struct ExchangedKeys {
    exchange: Arc<dyn KeyValueExchange>,
    /// Rows each rank gives the all-gather (the most any rank holds; fewer are padded).
    rows_per_rank: usize,
    /// For every key row of the segments, its row in the gathered keys.
    slots: Vec<u32>,
}

impl std::fmt::Debug for ExchangedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangedKeys")
            .field("ranks", &self.exchange.ranks())
            .field("rows_per_rank", &self.rows_per_rank)
            .field("key_rows", &self.slots.len())
            .finish()
    }
}

/// Rank `rank`'s view of a row split by `split`: the row indices of its tokens, their
/// positions within their documents, its query and key segments, and the keys' rows in
/// the group's gathered buffer.
pub(crate) fn share(split: &ContextSplit, rank: usize) -> (Vec<u32>, Vec<u32>, Segments, Vec<u32>) {
    let cu = split.cu_seqlens();
    let rows_per_rank = split.max_tokens() as u32;
    let owners = split.owners();
    let (mut tokens, mut positions, mut slots) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cu_q, mut cu_k) = (vec![0u32], vec![0u32]);
    for piece in split.pieces(rank) {
        let first = cu[piece.doc] + piece.start;
        tokens.extend(first..first + piece.len);
        positions.extend(piece.start..piece.start + piece.len);
        // The chunk's keys: its document from the start to the chunk's end.
        let keys = cu[piece.doc]..first + piece.len;
        slots.extend(keys.clone().map(|t| {
            let (owner, local) = owners[t as usize];
            owner * rows_per_rank + local
        }));
        cu_q.push(cu_q[cu_q.len() - 1] + piece.len);
        cu_k.push(cu_k[cu_k.len() - 1] + keys.len() as u32);
    }
    // Bounds built from pieces rise and give each chunk at least its own keys.
    let segments =
        Segments::new(cu_q, cu_k).unwrap_or_else(|_| unreachable!("a chunk's keys include itself"));
    (tokens, positions, segments, slots)
}

impl ExchangedKeys {
    pub(crate) fn new(exchange: Arc<dyn KeyValueExchange>, split: &ContextSplit, slots: Vec<u32>) -> Self {
        Self { exchange, rows_per_rank: split.max_tokens(), slots }
    }

    /// The keys and values every local query segment sees (`[key rows, kv_heads,
    /// head_dim]` each), from this rank's `k` and `v`; differentiable, the backward
    /// returning each key's summed gradient to the rank that holds it.
    pub fn gather(&self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (rows, kv_heads, head_dim) = k.dims3()?;
        if rows > self.rows_per_rank || v.dims() != k.dims() {
            return Err(ModelError::Packing(format!(
                "keys {:?} and values {:?} for a context share of at most {} tokens",
                k.dims(),
                v.dims(),
                self.rows_per_rank
            )));
        }
        let width = kv_heads * head_dim;
        let local = Tensor::cat(&[k.reshape((rows, width))?, v.reshape((rows, width))?], 1)?
            .pad_with_zeros(0, 0, self.rows_per_rank - rows)?
            .contiguous()?;
        let gathered = self.exchange.all_gather(&local.detach())?.contiguous()?.detach();
        let expected = [self.exchange.ranks() * self.rows_per_rank, 2 * width];
        if gathered.dims() != expected {
            return Err(ModelError::Packing(format!(
                "the group's all-gather gave {:?}, expected {expected:?}",
                gathered.dims()
            )));
        }
        // On a tape, the gathered rows stand for the local ones (a copy); without one, as they are.
        let gathered = if local.track_op() {
            local.apply_op2(&gathered, Gathered(self.exchange.clone()))?
        } else {
            gathered
        };
        let slots = Tensor::new(self.slots.as_slice(), k.device())?;
        let keys = gathered.index_select(&slots, 0)?;
        let shape = (self.slots.len(), kv_heads, head_dim);
        Ok((keys.narrow(1, 0, width)?.reshape(shape)?, keys.narrow(1, width, width)?.reshape(shape)?))
    }
}

/// The group's gathered rows (the second argument, computed before), standing for this
/// rank's own rows (the first) on the tape: its backward reduce-scatters the gradient of
/// the gathered rows back to their owners.
struct Gathered(Arc<dyn KeyValueExchange>);

impl CustomOp2 for Gathered {
    fn name(&self) -> &'static str {
        "context-all-gather"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        gathered: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((gathered.try_clone(layout)?, layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        gathered: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        Ok((gathered.try_clone(layout)?, layout.shape().clone()))
    }

    fn bwd(
        &self,
        local: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let mine = self.0.reduce_scatter(grad).map_err(candle_core::Error::wrap)?;
        Ok((Some(mine.to_dtype(local.dtype())?), None))
    }
}
