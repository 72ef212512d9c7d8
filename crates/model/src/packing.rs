//! The layout of one packed row: where its documents start and end, and the positions
//! that follow from it.

use crate::error::{ModelError, Result};

/// Document boundaries of a packed row, as flash-attention's `cu_seqlens`: document `i`
/// holds tokens `cu_seqlens[i]..cu_seqlens[i + 1]`. Positions restart at 0 in each
/// document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedLayout {
    cu_seqlens: Vec<u32>,
    positions: Vec<u32>,
}

impl PackedLayout {
    /// Checks `cu_seqlens`: starts at 0, strictly increasing.
    pub fn new(cu_seqlens: Vec<u32>) -> Result<Self> {
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
        let positions = cu_seqlens.windows(2).flat_map(|w| 0..w[1] - w[0]).collect();
        Ok(Self { cu_seqlens, positions })
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

    pub fn cu_seqlens(&self) -> &[u32] {
        &self.cu_seqlens
    }

    /// Position of every token within its document.
    pub fn positions(&self) -> &[u32] {
        &self.positions
    }

    /// Tokens in the row.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    pub fn num_documents(&self) -> usize {
        self.cu_seqlens.len() - 1
    }
}
