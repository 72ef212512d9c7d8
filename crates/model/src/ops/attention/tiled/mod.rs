//! CPU flash attention over raw f32 slices, with an explicit backward.
//!
//! **Maths.** For a query row `q` and the keys it sees, `s_j = scale * q · k_j`,
//! `P = softmax(s)`, `O = P V`, and the log-sum-exp `L = log sum_j exp(s_j)` is saved. The
//! backward recomputes `P = exp(s - L)` and, with `D = rowsum(dO * O)`,
//! `dV = P^T dO`, `dP = dO V^T`, `dS = P (dP - D)`, `dQ = scale * dS K`,
//! `dK = scale * dS^T Q` (summed over the query heads a key/value head serves).
//!
//! **Tiling.** Queries go by tiles of up to [`QUERY_TILE`] rows of one head (fewer with
//! `max_block_rows`), keys by tiles of [`simd::BC`]. A query tile visits the key tiles of
//! its segment up to its last row's diagonal only, masking inside the tiles it straddles;
//! the forward keeps a running maximum and sum per row (online softmax), so nothing larger
//! than a tile is ever formed. Scores are kept in base 2 so that a polynomial `exp2`
//! ([`simd::exp2`], ~2 ulp) gives the probabilities.
//!
//! **Determinism.** Work items run in parallel on rayon, but each writes only its own
//! buffer, summing in an order fixed by the item alone: the forward and dQ over
//! (query head, query tile), each visiting its key tiles in order; dK and dV over
//! (key/value head, key tile), each visiting its group's query heads and rows in order.
//! No sum is split across threads, so every run gives the same bits whatever the pool
//! (on one machine: fused multiply-adds, where the CPU has them, round differently).

mod kernel;
mod simd;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use davinci_kernels::attention::SavedLse;
use davinci_kernels::ops::{cpu_slice, cpu_storage_slice};

use self::kernel::{Dims, Inputs, Saved, Segment, Tile};
use super::Segments;
use crate::error::{ModelError, Result};

/// Query rows of a tile by default: with [`simd::BC`] keys, a tile's scores fit in L1
/// and a 1024-token document makes 16 tiles per head to share among threads.
pub const QUERY_TILE: usize = 64;

/// Attention as [`super::attention`] defines it, for f32 tensors on the CPU.
/// `max_block_rows` caps the query rows of a tile (default [`QUERY_TILE`]); tests lower it
/// to exercise many tiles on small inputs.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &Segments,
    scale: f64,
    max_block_rows: Option<usize>,
) -> Result<Tensor> {
    let rows = max_block_rows.unwrap_or(QUERY_TILE).clamp(1, QUERY_TILE);
    let op = TiledAttention { segments: segments.clone(), scale, rows, lse: SavedLse::default() };
    Ok(q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)?)
}

/// Bytes the backward holds besides its inputs and the gradients it returns: the
/// log-sum-exp and `D` of every query row, and the tiles' gradients before they are
/// placed (as large as the gradients).
pub fn backward_scratch_bytes(tokens: usize, key_tokens: usize, dims: (usize, usize, usize)) -> usize {
    let (q_heads, kv_heads, head_dim) = dims;
    4 * (2 * q_heads * tokens + tokens * q_heads * head_dim + 2 * key_tokens * kv_heads * head_dim)
}

/// The op's name, in its errors too.
const NAME: &str = "varlen-causal-attention";

struct TiledAttention {
    segments: Segments,
    scale: f64,
    rows: usize,
    /// `[q_heads, tokens]` log-sum-exp of each query row, saved by the forward for the backward.
    lse: SavedLse,
}

impl TiledAttention {
    fn segments(&self) -> impl Iterator<Item = Segment> + '_ {
        self.segments.iter().map(|(q, k)| Segment {
            q_start: q.start,
            q_len: q.len(),
            k_start: k.start,
            k_len: k.len(),
        })
    }

    /// (query head, query tile) work items, longest first so short ones fill in at the end.
    fn query_tiles(&self, dims: Dims) -> Vec<Tile> {
        let mut tiles = Vec::new();
        for segment in self.segments() {
            for first in (0..segment.q_len).step_by(self.rows) {
                let end = (first + self.rows).min(segment.q_len);
                tiles.extend((0..dims.q_heads).map(|head| Tile { head, segment, first, end }));
            }
        }
        tiles.sort_by_key(|t| std::cmp::Reverse(t.end + t.segment.k_len - t.segment.q_len));
        tiles
    }

    /// (key/value head, key tile) work items, longest first.
    fn key_tiles(&self, dims: Dims) -> Vec<Tile> {
        let mut tiles = Vec::new();
        for segment in self.segments().filter(|s| s.q_len > 0) {
            for first in (0..segment.k_len).step_by(simd::BC) {
                let end = (first + simd::BC).min(segment.k_len);
                tiles.extend((0..dims.kv_heads).map(|head| Tile { head, segment, first, end }));
            }
        }
        // A key tile's work is the query rows from the first that sees it to the end.
        tiles.sort_by_key(|t| (t.first + t.segment.q_len).saturating_sub(t.segment.k_len));
        tiles
    }
}

fn dims_of(q: &Layout, k: &Layout) -> candle_core::Result<(usize, usize, Dims)> {
    let (tokens, q_heads, head_dim) = q.shape().dims3()?;
    let (key_tokens, kv_heads, _) = k.shape().dims3()?;
    Ok((tokens, key_tokens, Dims { q_heads, kv_heads, head_dim }))
}

/// Copies each tile's `[rows, d]` result into head `tile.head` of a `[tokens, heads, d]`
/// buffer.
fn place(dst: &mut [f32], heads: usize, d: usize, tiles: &[Tile], parts: &[Vec<f32>], key_rows: bool) {
    for (tile, part) in tiles.iter().zip(parts) {
        let start = if key_rows { tile.segment.k_start } else { tile.segment.q_start } + tile.first;
        for (i, row) in part.chunks_exact(d).enumerate() {
            let at = ((start + i) * heads + tile.head) * d;
            dst[at..at + d].copy_from_slice(row);
        }
    }
}

impl CustomOp3 for TiledAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (tokens, _, dims) = dims_of(lq, lk)?;
        let d = dims.head_dim;
        let x = Inputs {
            dims,
            q: cpu_slice(NAME, sq, lq)?,
            k: cpu_slice(NAME, sk, lk)?,
            v: cpu_slice(NAME, sv, lv)?,
            scale: self.scale as f32,
        };
        let isa = simd::isa();
        let tiles = self.query_tiles(dims);
        let mut parts = parts_for(&tiles, |rows| (vec![0f32; rows * d], vec![0f32; rows]));
        parts
            .par_iter_mut()
            .zip(&tiles)
            .for_each(|((out, lse), &tile)| kernel::forward(isa, &x, tile, out, lse));
        let mut out = vec![0f32; tokens * dims.q_heads * d];
        let mut lse = vec![0f32; dims.q_heads * tokens];
        for (tile, (_, part)) in tiles.iter().zip(&parts) {
            let at = tile.head * tokens + tile.segment.q_start + tile.first;
            lse[at..at + part.len()].copy_from_slice(part);
        }
        let outs: Vec<Vec<f32>> = parts.into_iter().map(|(o, _)| o).collect();
        place(&mut out, dims.q_heads, d, &tiles, &outs, false);
        let lse = Tensor::from_vec(lse, (dims.q_heads, tokens), &candle_core::Device::Cpu)?;
        self.lse.store(lse)?;
        Ok((CpuStorage::F32(out), Shape::from((tokens, dims.q_heads, d))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = self.lse.get("attention")?;
        let f32_of = |t: &Tensor| t.detach().to_dtype(DType::F32)?.contiguous();
        let tensors = [q, k, v, out, grad_out, &lse].map(f32_of);
        let [q, k, v, out, grad_out, lse] = tensors;
        let tensors = [q?, k?, v?, out?, grad_out?, lse?];
        let guards = tensors.each_ref().map(|t| t.storage_and_layout());
        let mut slices = Vec::with_capacity(guards.len());
        for (storage, layout) in &guards {
            slices.push(cpu_storage_slice(NAME, storage, layout)?);
        }
        let (lq, lk) = (guards[0].1, guards[1].1);
        let (tokens, key_tokens, dims) = dims_of(lq, lk)?;
        let (dq, dk, dv) =
            self.backward(&slices, tokens, key_tokens, dims).map_err(candle_core::Error::wrap)?;
        let device = &candle_core::Device::Cpu;
        Ok((
            Some(Tensor::from_vec(dq, (tokens, dims.q_heads, dims.head_dim), device)?),
            Some(Tensor::from_vec(dk, (key_tokens, dims.kv_heads, dims.head_dim), device)?),
            Some(Tensor::from_vec(dv, (key_tokens, dims.kv_heads, dims.head_dim), device)?),
        ))
    }
}

/// Each tile's output buffers, made by `make` from its row count on the calling thread:
/// the heap accounting of `davinci_train::memory` counts per thread, and a buffer made on
/// a rayon worker and freed here would leave the rank's own count short by its size.
fn parts_for<T: Send>(tiles: &[Tile], make: impl Fn(usize) -> T) -> Vec<T> {
    tiles.iter().map(|tile| make(tile.end - tile.first)).collect()
}

impl TiledAttention {
    /// dQ, dK, dV from the slices of `[q, k, v, out, grad_out, lse]`.
    fn backward(
        &self,
        slices: &[&[f32]],
        tokens: usize,
        key_tokens: usize,
        dims: Dims,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let &[q, k, v, out, grad_out, lse] = slices else {
            return Err(ModelError::Packing("tiled attention backward takes six tensors".into()));
        };
        let d = dims.head_dim;
        // Base-2 log-sum-exp, and D = rowsum(dO * O), both [q_heads, tokens].
        let lse2: Vec<f32> = lse.iter().map(|l| l * std::f32::consts::LOG2_E).collect();
        let mut delta = vec![0f32; dims.q_heads * tokens];
        for (t, (o, g)) in
            out.chunks_exact(dims.q_heads * d).zip(grad_out.chunks_exact(dims.q_heads * d)).enumerate()
        {
            for (h, (o, g)) in o.chunks_exact(d).zip(g.chunks_exact(d)).enumerate() {
                delta[h * tokens + t] = o.iter().zip(g).map(|(o, g)| o * g).sum();
            }
        }
        let x = Inputs { dims, q, k, v, scale: self.scale as f32 };
        let saved = Saved { grad_out, lse2: &lse2, delta: &delta, tokens };
        let isa = simd::isa();

        let key_tiles = self.key_tiles(dims);
        let mut kv_parts = parts_for(&key_tiles, |rows| (vec![0f32; rows * d], vec![0f32; rows * d]));
        kv_parts
            .par_iter_mut()
            .zip(&key_tiles)
            .for_each(|((dk, dv), &tile)| kernel::backward_kv(isa, &x, &saved, tile, dk, dv));
        let (dk_parts, dv_parts): (Vec<_>, Vec<_>) = kv_parts.into_iter().unzip();
        let mut dk = vec![0f32; key_tokens * dims.kv_heads * d];
        let mut dv = vec![0f32; key_tokens * dims.kv_heads * d];
        place(&mut dk, dims.kv_heads, d, &key_tiles, &dk_parts, true);
        place(&mut dv, dims.kv_heads, d, &key_tiles, &dv_parts, true);

        let query_tiles = self.query_tiles(dims);
        let mut dq_parts = parts_for(&query_tiles, |rows| vec![0f32; rows * d]);
        dq_parts
            .par_iter_mut()
            .zip(&query_tiles)
            .for_each(|(dq, &tile)| kernel::backward_q(isa, &x, &saved, tile, dq));
        let mut dq = vec![0f32; tokens * dims.q_heads * d];
        place(&mut dq, dims.q_heads, d, &query_tiles, &dq_parts, false);
        Ok((dq, dk, dv))
    }
}

#[cfg(test)]
mod tests {
    use super::kernel::{self, Dims, Inputs, Saved, Segment, Tile};
    use super::simd;
    use davinci_kernels::simd::Isa;

    /// Every instruction set this machine has runs the kernels to the same values, up to
    /// the rounding of fused multiply-adds (the plain path is otherwise untested here).
    #[test]
    fn every_instruction_set_computes_the_same_tiles() {
        let dims = Dims { q_heads: 4, kv_heads: 2, head_dim: 24 };
        let (tokens, d) = (150, dims.head_dim);
        let mut state = 7u32;
        let mut random = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 8) as f32 / (1 << 24) as f32 - 0.5
                })
                .collect()
        };
        let (q, k, v) = (random(tokens * 4 * d), random(tokens * 2 * d), random(tokens * 2 * d));
        let (grad_out, delta) = (random(tokens * 4 * d), random(tokens * 4));
        let lse2 = vec![3.0; tokens * 4];
        let x = Inputs { dims, q: &q, k: &k, v: &v, scale: 0.9 };
        let saved = Saved { grad_out: &grad_out, lse2: &lse2, delta: &delta, tokens };
        let segment = Segment { q_start: 10, q_len: 100, k_start: 0, k_len: 150 };
        let (query, key) =
            (Tile { head: 3, segment, first: 40, end: 90 }, Tile { head: 1, segment, first: 64, end: 128 });
        let run = |isa| {
            let (mut out, mut lse, mut dq) = (vec![0f32; 50 * d], vec![0f32; 50], vec![0f32; 50 * d]);
            let (mut dk, mut dv) = (vec![0f32; 64 * d], vec![0f32; 64 * d]);
            kernel::forward(isa, &x, query, &mut out, &mut lse);
            kernel::backward_q(isa, &x, &saved, query, &mut dq);
            kernel::backward_kv(isa, &x, &saved, key, &mut dk, &mut dv);
            [out, lse, dq, dk, dv]
        };
        let plain = run(Isa::Plain);
        let others = match simd::isa() {
            Isa::Avx512 => vec![Isa::Avx2, Isa::Avx512],
            Isa::Avx2 => vec![Isa::Avx2],
            Isa::Plain => vec![],
        };
        for isa in others {
            for (got, want) in run(isa).iter().zip(&plain) {
                let scale = want.iter().fold(0f32, |m, w| m.max(w.abs()));
                let worst = got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                assert!(worst <= 1e-5 * scale, "{isa:?}: {worst:e} off, of {scale:e}");
            }
        }
    }
}
