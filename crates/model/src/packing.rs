//! The layout of one packed row, or of a rank's share of it: the positions of its tokens
//! within their documents, and which keys each query sees.

use std::sync::Arc;

use candle_core::Tensor;

use crate::context::{share, ContextSplit, ExchangedKeys, KeyValueExchange};
use crate::error::{ModelError, Result};
use crate::ops::{attention, Segments};

/// Document boundaries of a packed row, as flash-attention's `cu_seqlens`: document `i`
/// holds tokens `cu_seqlens[i]..cu_seqlens[i + 1]`, and positions restart at 0 in each.
/// Under context parallelism ([`PackedLayout::context_share`]) a rank holds chunks of
/// the row's documents: positions stay those of the whole document, and attention
/// reaches the keys of the other ranks.
#[derive(Debug, Clone)]
pub struct PackedLayout {
    positions: Vec<u32>,
    segments: Segments,
    /// The row indices of this rank's tokens and the exchange, under context parallelism.
    context: Option<(Vec<u32>, ExchangedKeys)>,
}

impl PackedLayout {
    /// Checks `cu_seqlens`: starts at 0, strictly increasing.
    pub fn new(cu_seqlens: Vec<u32>) -> Result<Self> {
        check_cu_seqlens(&cu_seqlens)?;
        let positions = cu_seqlens.windows(2).flat_map(|w| 0..w[1] - w[0]).collect();
        Ok(Self { positions, segments: Segments::documents(&cu_seqlens), context: None })
    }

    /// A row that is a single document of `len` tokens.
    pub fn single(len: usize) -> Result<Self> {
        Self::new(vec![0, len as u32])
    }

    /// A row made of documents of the given lengths, in order.
    pub fn from_lengths(lengths: &[usize]) -> Result<Self> {
        let mut cu = vec![0u32];
        for &len in lengths {
            let last = *cu.last().unwrap_or(&0);
            cu.push(last + len as u32);
        }
        Self::new(cu)
    }

    /// Rank `rank`'s share of the row `split` divides, attending across its group through
    /// `exchange`. Select the rank's tokens (ids, labels) with [`PackedLayout::row_indices`].
    pub fn context_share(
        split: &ContextSplit,
        rank: usize,
        exchange: Arc<dyn KeyValueExchange>,
    ) -> Result<Self> {
        check_cu_seqlens(split.cu_seqlens())?;
        if split.ranks() != exchange.ranks() || rank >= split.ranks() {
            return Err(ModelError::Packing(format!(
                "rank {rank} of a row split {} ways, over a group of {}",
                split.ranks(),
                exchange.ranks()
            )));
        }
        let (tokens, positions, segments, slots) = share(split, rank);
        let keys = ExchangedKeys::new(exchange, split, slots);
        Ok(Self { positions, segments, context: Some((tokens, keys)) })
    }

    /// Where this layout's tokens sit in the row: all of them in order, or a context
    /// rank's share.
    pub fn row_indices(&self) -> Vec<u32> {
        match &self.context {
            Some((tokens, _)) => tokens.clone(),
            None => (0..self.len() as u32).collect(),
        }
    }

    /// Position of every token within its document.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// The query and key segments of attention.
    pub fn segments(&self) -> &Segments {
        &self.segments
    }

    /// Tokens in the row (or in this rank's share of it).
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Causal attention of this layout's queries (`[tokens, q_heads, head_dim]`) on the
    /// keys they see: their own documents', across the context group when there is one.
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        match &self.context {
            None => attention(q, k, v, &self.segments, scale),
            Some((_, keys)) => {
                let (k, v) = keys.gather(k, v)?;
                attention(q, &k, &v, &self.segments, scale)
            }
        }
    }
}

/// `cu_seqlens` start at 0 and rise strictly.
fn check_cu_seqlens(cu_seqlens: &[u32]) -> Result<()> {
    if cu_seqlens.first() != Some(&0) || cu_seqlens.len() < 2 {
        return Err(ModelError::Packing(format!(
            "cu_seqlens must start at 0 and name at least one document, got {cu_seqlens:?}"
        )));
    }
    if let Some(w) = cu_seqlens.windows(2).find(|w| w[1] <= w[0]) {
        return Err(ModelError::Packing(format!(
            "cu_seqlens must be strictly increasing, got {} then {}",
            w[0], w[1]
        )));
    }
    Ok(())
}
