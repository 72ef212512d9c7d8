//! The work lists of the flash-attention kernels (`kernels/flash_attention.cu`): one entry
//! per tile of a segment's queries (forward, dQ) or keys (dK/dV), longest work first so
//! that the causal triangle's short tiles fill in at the end.
//!
//! Queries and keys come from separate packed buffers with their own boundaries
//! (`cu_seqlens_q`, `cu_seqlens_k`), so that a rank of context parallelism can hold a
//! chunk of a document's queries against the keys of the whole prefix. The causal mask is
//! aligned at the bottom right, as flash-attn's varlen functions align it: a segment's
//! last query sees its last key.

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

/// The segments' boundaries in the query rows and in the key rows (`cu_seqlens_q`,
/// `cu_seqlens_k`; the same slice twice for self-attention over packed documents).
#[derive(Debug, Clone, Copy)]
pub struct Segments<'a> {
    pub q: &'a [u32],
    pub k: &'a [u32],
}

impl<'a> Segments<'a> {
    /// Documents packed in one row, each its own queries and keys.
    pub fn packed(cu_seqlens: &'a [u32]) -> Self {
        Self { q: cu_seqlens, k: cu_seqlens }
    }

    /// The first query row and the first key row past the last segment: the rest of each
    /// buffer is padding, which the kernels never visit.
    pub fn padding_start(&self) -> (usize, usize) {
        let last = |cu: &[u32]| cu.last().map_or(0, |&e| e as usize);
        (last(self.q), last(self.k))
    }
}

/// A tile as the kernels read it (`fa::Tile`): rows `first..first + tile` (query rows for
/// the forward and dQ, key rows for dK/dV) of the segment whose queries are
/// `q_start..q_end` and keys `k_start..k_end`. Query row `r` sees the keys
/// `k_start..=r + (k_end - q_end)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub first: i32,
    pub q_start: i32,
    pub q_end: i32,
    pub k_start: i32,
    pub k_end: i32,
}

impl Tile {
    /// How far the key rows run ahead of the query rows on the causal diagonal.
    fn diagonal(&self) -> i32 {
        self.k_end - self.q_end
    }

    /// The keys a query tile visits: from its segment's first key to the one its last
    /// row sees.
    pub fn keys_seen(&self) -> i32 {
        (self.first + QUERY_TILE as i32).min(self.q_end) + self.diagonal() - self.k_start
    }

    /// The queries a key tile is seen by: from the first that sees its first key to the
    /// segment's end (none in a segment without queries).
    pub fn queries_seeing(&self) -> i32 {
        self.q_end - self.q_start.max(self.first - self.diagonal())
    }
}

/// Query rows per block of the forward and dQ kernels (`fa::kQueryRows`: 32 a warp).
pub const QUERY_TILE: usize = 128;
/// Keys per step of the forward and dQ kernels (`fa::kKeysPerStep`): 32 at head_dim 128,
/// where 64 keys' scores would not fit the registers beside the accumulators.
fn keys_per_step(head_dim: usize) -> usize {
    if head_dim == 128 {
        32
    } else {
        64
    }
}
/// Key rows per block of the dK/dV kernel.
pub const KEY_TILE: usize = 64;
/// Query rows per step of the dK/dV kernel (`fa::kQueries`).
const DKDV_QUERIES: usize = 32;
/// Head sizes the kernels are built for.
pub const HEAD_DIMS: [usize; 2] = [64, 128];

/// Query tiles of segments [`AttentionShape::check`] accepts: each sees the keys from its
/// segment's start to its own diagonal, so rows further into a segment mean more work, and
/// those start first.
pub fn query_tiles(cu: Segments<'_>) -> Vec<Tile> {
    let mut tiles = tiles(cu, QUERY_TILE, false);
    tiles.sort_by_key(|t| std::cmp::Reverse((t.keys_seen(), t.first)));
    tiles
}

/// Key tiles of `rows` keys: each is seen by the queries from the first that reaches it to
/// its segment's end. Keys of a segment without queries get a tile too, so that their
/// gradient is written (as zeros). Longest work first, and a segment's tiles in order (a
/// tile sees no more queries than the one before it): the Hopper backward adds each key
/// tile's share of dQ in the tile's turn within its segment, so every tile's predecessors
/// must start before it.
pub fn key_tiles(cu: Segments<'_>, rows: usize) -> Vec<Tile> {
    let mut tiles = tiles(cu, rows, true);
    tiles.sort_by_key(|t| (std::cmp::Reverse(t.queries_seeing()), t.first));
    tiles
}

/// Tiles of `rows` over each segment's keys (`over_keys`) or queries.
fn tiles(cu: Segments<'_>, rows: usize, over_keys: bool) -> Vec<Tile> {
    let mut tiles = Vec::new();
    for (q, k) in cu.q.windows(2).zip(cu.k.windows(2)) {
        let segment = Tile {
            first: 0,
            q_start: q[0] as i32,
            q_end: q[1] as i32,
            k_start: k[0] as i32,
            k_end: k[1] as i32,
        };
        let (start, end) =
            if over_keys { (segment.k_start, segment.k_end) } else { (segment.q_start, segment.q_end) };
        tiles.extend((start..end).step_by(rows).map(|first| Tile { first, ..segment }));
    }
    tiles
}

/// Dynamic shared memory (bytes) of the forward, dQ and dK/dV kernels for a head size:
/// swizzled bf16 rows (no padding): the forward's Q tile and one K and one V tile, dQ's
/// Q and dO tiles and two of K and V, dK/dV's K and V tiles and two of Q and dO with each
/// query's lse and D.
pub fn shared_bytes(head_dim: usize) -> [usize; 3] {
    let (row, keys) = (head_dim * 2, keys_per_step(head_dim));
    [
        (QUERY_TILE + 2 * keys) * row,
        (2 * QUERY_TILE + 4 * keys) * row,
        (2 * KEY_TILE + 4 * DKDV_QUERIES) * row + 4 * DKDV_QUERIES * 4,
    ]
}

/// The shape of one attention call: q `[q_tokens, q_heads, head_dim]`, k and v
/// `[k_tokens, kv_heads, head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub q_tokens: usize,
    pub k_tokens: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// The shape of self-attention over one packed row (`cu_seqlens` the same for queries
    /// and keys).
    pub fn packed(tokens: usize, q_heads: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self { q_tokens: tokens, k_tokens: tokens, q_heads, kv_heads, head_dim }
    }

    /// Elements of q (or of k and v with `kv`).
    pub fn elements(&self, kv: bool) -> usize {
        if kv {
            self.k_tokens * self.kv_heads * self.head_dim
        } else {
            self.q_tokens * self.q_heads * self.head_dim
        }
    }

    /// Refuses shapes the kernels are not built for, and segment boundaries that are not
    /// two lists of one length rising from 0 within their buffers (each may end in padding
    /// past its last segment), or a segment with fewer keys than queries (the bottom-right
    /// diagonal would leave its first queries without a key).
    pub fn check(&self, cu: Segments<'_>) -> Result<(), String> {
        let Self { q_tokens, k_tokens, q_heads, kv_heads, head_dim } = *self;
        let Segments { q: cu_q, k: cu_k } = cu;
        if !HEAD_DIMS.contains(&head_dim) {
            return Err(format!("flash attention is built for head_dim 64 and 128, not {head_dim}"));
        }
        if kv_heads == 0 || !q_heads.is_multiple_of(kv_heads) {
            return Err(format!("{q_heads} query heads do not group over {kv_heads} key/value heads"));
        }
        if cu_q.len() != cu_k.len() {
            return Err(format!(
                "cu_seqlens_q has {} entries and cu_seqlens_k {}: one segment each",
                cu_q.len(),
                cu_k.len()
            ));
        }
        for (what, cu, tokens) in [("cu_seqlens_q", cu_q, q_tokens), ("cu_seqlens_k", cu_k, k_tokens)] {
            if cu.first() != Some(&0) || cu.windows(2).any(|w| w[0] > w[1]) {
                return Err(format!("{what} {cu:?} must start at 0 and not decrease"));
            }
            if cu.last().is_some_and(|&end| end as usize > tokens) {
                return Err(format!("{what} {cu:?} reach past the buffer's {tokens} rows"));
            }
        }
        // The kernels number rows in i32, up to a tile past the last.
        if q_tokens.max(k_tokens) > i32::MAX as usize - QUERY_TILE {
            return Err(format!("{q_tokens} query and {k_tokens} key rows are more than the kernels number"));
        }
        let lengths = |cu: &[u32], i: usize| cu[i + 1] - cu[i];
        if let Some(i) = (0..cu_q.len() - 1).find(|&i| lengths(cu_k, i) < lengths(cu_q, i)) {
            return Err(format!(
                "segment {i} has {} queries but only {} keys: a segment's queries see the end of its keys, so \
                 it needs at least as many keys as queries",
                lengths(cu_q, i),
                lengths(cu_k, i)
            ));
        }
        Ok(())
    }
}
