//! The work lists of the flash-attention kernels (`kernels/flash_attention.cu`): one entry
//! per tile of a document's queries (forward, dQ) or keys (dK/dV), longest work first so
//! that the causal triangle's short tiles fill in at the end.

use std::sync::Mutex;

use candle_core::Tensor;

/// The log-sum-exp of each query row that an attention forward keeps for its backward:
/// candle hands a custom op's backward only the inputs and the output, so the op itself
/// holds what else the backward needs. Both attention paths (the CPU's tiled one and the
/// CUDA kernel) keep theirs here.
#[derive(Debug, Default)]
pub struct SavedLse(Mutex<Option<Tensor>>);

impl SavedLse {
    pub fn store(&self, lse: Tensor) -> candle_core::Result<()> {
        *self.0.lock().map_err(|_| candle_core::Error::Msg("attention state poisoned".into()))? = Some(lse);
        Ok(())
    }

    /// The forward's lse, or an error naming `op` when no forward has run.
    pub fn get(&self, op: &str) -> candle_core::Result<Tensor> {
        let saved = self.0.lock().map_err(|_| candle_core::Error::Msg("attention state poisoned".into()))?;
        saved.clone().ok_or_else(|| candle_core::Error::Msg(format!("{op}: backward before its forward")))
    }
}

/// A tile as the kernels read it (`fa::Tile`): rows `first..first + tile` of the document
/// `doc_start..doc_end`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub first: i32,
    pub doc_start: i32,
    pub doc_end: i32,
}

/// Query rows per block of the forward and dQ kernels.
pub const QUERY_TILE: usize = 64;
/// Key rows per block of the dK/dV kernel.
pub const KEY_TILE: usize = 64;
/// Query rows per step of the dK/dV kernel (`fa::kQueries`).
const DKDV_QUERIES: usize = 32;
/// Head sizes the kernels are built for.
pub const HEAD_DIMS: [usize; 2] = [64, 128];

/// Query tiles: each sees the keys from its document's start to its own end, so more rows
/// further into a document mean more work.
pub fn query_tiles(cu_seqlens: &[u32]) -> Vec<Tile> {
    let mut tiles = tiles(cu_seqlens, QUERY_TILE);
    tiles.sort_by_key(|t| {
        std::cmp::Reverse(((t.first + QUERY_TILE as i32).min(t.doc_end) - t.doc_start, t.first))
    });
    tiles
}

/// Key tiles: each is seen by the queries from its own start to its document's end.
pub fn key_tiles(cu_seqlens: &[u32]) -> Vec<Tile> {
    let mut tiles = tiles(cu_seqlens, KEY_TILE);
    tiles.sort_by_key(|t| std::cmp::Reverse((t.doc_end - t.first, t.first)));
    tiles
}

fn tiles(cu_seqlens: &[u32], rows: usize) -> Vec<Tile> {
    let mut tiles = Vec::new();
    for w in cu_seqlens.windows(2) {
        let (start, end) = (w[0] as i32, w[1] as i32);
        let mut first = start;
        while first < end {
            tiles.push(Tile { first, doc_start: start, doc_end: end });
            first += rows as i32;
        }
    }
    tiles
}

/// Dynamic shared memory (bytes) of the forward, dQ and dK/dV kernels for a head size:
/// bf16 rows padded by 8 elements, and in dK/dV two buffers of each query's lse and D.
pub fn shared_bytes(head_dim: usize) -> [usize; 3] {
    let row = (head_dim + 8) * 2;
    [
        5 * QUERY_TILE * row,
        6 * QUERY_TILE * row,
        (2 * KEY_TILE + 4 * DKDV_QUERIES) * row + 4 * DKDV_QUERIES * 4,
    ]
}

/// The shape of one attention call over a packed row: q `[tokens, q_heads, head_dim]`, k
/// and v `[tokens, kv_heads, head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub tokens: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// Elements of q (or of k and v with `kv`).
    pub fn elements(&self, kv: bool) -> usize {
        self.tokens * if kv { self.kv_heads } else { self.q_heads } * self.head_dim
    }

    /// Refuses shapes the kernels are not built for, and `cu_seqlens` that do not rise
    /// from 0 within the row (a row may end in padding past the last document).
    pub fn check(&self, cu_seqlens: &[u32]) -> Result<(), String> {
        let Self { tokens, q_heads, kv_heads, head_dim } = *self;
        if !HEAD_DIMS.contains(&head_dim) {
            return Err(format!("flash attention is built for head_dim 64 and 128, not {head_dim}"));
        }
        if kv_heads == 0 || !q_heads.is_multiple_of(kv_heads) {
            return Err(format!("{q_heads} query heads do not group over {kv_heads} key/value heads"));
        }
        if cu_seqlens.first() != Some(&0) || cu_seqlens.windows(2).any(|w| w[0] > w[1]) {
            return Err(format!("cu_seqlens {cu_seqlens:?} must start at 0 and not decrease"));
        }
        if cu_seqlens.last().is_some_and(|&end| end as usize > tokens) || tokens > i32::MAX as usize {
            return Err(format!("cu_seqlens {cu_seqlens:?} reach past the row's {tokens} tokens"));
        }
        Ok(())
    }

    /// The first row past the last document: the rest is padding, which the kernels never
    /// visit.
    pub fn padding_start(&self, cu_seqlens: &[u32]) -> usize {
        cu_seqlens.last().map_or(0, |&e| e as usize)
    }
}
