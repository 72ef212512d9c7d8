//! The three tile kernels: the forward of a query tile, the dK/dV of a key tile, the dQ
//! of a query tile. Each reads the whole inputs and writes only its own output buffer, in
//! an order fixed by the tile alone; scores are in base 2 (`q` scaled by
//! `scale * log2(e)`), so that the probabilities are `exp2` of a difference.

use super::simd::{self, dispatch, madd, BC};

/// The sizes of a call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Dims {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }
}

/// A segment's rows: queries `q_start..q_start + q_len`, keys `k_start..k_start + k_len`.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub q_start: usize,
    pub q_len: usize,
    pub k_start: usize,
    pub k_len: usize,
}

impl Segment {
    /// Keys the query at offset `t` sees: `0..visible(t)` of the segment's.
    fn visible(&self, t: usize) -> usize {
        t + 1 + self.k_len - self.q_len
    }
}

/// Query offsets `first..end` of a segment, for one query head (forward and dQ), or
/// key offsets `first..end` of one key/value head (dK and dV).
#[derive(Clone, Copy, Debug)]
pub struct Tile {
    pub head: usize,
    pub segment: Segment,
    pub first: usize,
    pub end: usize,
}

/// What every kernel reads: `q` `[tokens, q_heads, d]`, `k` and `v`
/// `[key_tokens, kv_heads, d]`, the softmax scale.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub dims: Dims,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub scale: f32,
}

impl Inputs<'_> {
    /// Row `token` of query head `head`, scaled into base-2 scores.
    fn query(&self, token: usize, head: usize, out: &mut [f32]) {
        let d = self.dims.head_dim;
        let scale = self.scale * std::f32::consts::LOG2_E;
        let at = (token * self.dims.q_heads + head) * d;
        out.iter_mut().zip(&self.q[at..at + d]).for_each(|(o, &q)| *o = q * scale);
    }

    /// The tile's query rows, scaled, `[rows, d]`.
    fn queries(&self, tile: Tile) -> Vec<f32> {
        let d = self.dims.head_dim;
        let mut queries = vec![0f32; (tile.end - tile.first) * d];
        for (i, query) in queries.chunks_exact_mut(d).enumerate() {
            self.query(tile.segment.q_start + tile.first + i, tile.head, query);
        }
        queries
    }

    /// Keys and values `first..first + n` of head `head`, transposed.
    fn load(&self, head: usize, first: usize, n: usize, kt: &mut [[f32; BC]], vt: &mut [[f32; BC]]) {
        simd::load_transposed(self.k, self.dims.kv_heads, head, first, n, kt);
        simd::load_transposed(self.v, self.dims.kv_heads, head, first, n, vt);
    }
}

/// What the backward reads besides the inputs: `grad_out` like `q`, and per query head
/// and row (`[q_heads, tokens]`) the base-2 log-sum-exp and `D = rowsum(dO * O)`.
#[derive(Clone, Copy)]
pub struct Saved<'a> {
    pub grad_out: &'a [f32],
    pub lse2: &'a [f32],
    pub delta: &'a [f32],
    pub tokens: usize,
}

/// Query rows whose scores are formed together.
const SCORE_ROWS: usize = 4;

/// Scores of a base-2 query row against a transposed key tile, `-inf` from key `limit`.
#[inline(always)]
fn scores<const FMA: bool>(query: &[f32], kt: &[[f32; BC]], limit: usize) -> [f32; BC] {
    let mut s = simd::row_times::<FMA>(query, kt);
    s[limit..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
    s
}

/// The probabilities of a row from its scores and log-sum-exp, and `dS = P (dP - D)` with
/// `dP = dO · V`.
#[inline(always)]
fn probs_and_grad<const FMA: bool>(
    s: &[f32; BC],
    lse2: f32,
    grad_out: &[f32],
    vt: &[[f32; BC]],
    delta: f32,
) -> ([f32; BC], [f32; BC]) {
    probs_and_grad_of::<FMA>(s, lse2, &simd::row_times::<FMA>(grad_out, vt), delta)
}

/// [`probs_and_grad`] with `dP` already formed.
#[inline(always)]
fn probs_and_grad_of<const FMA: bool>(
    s: &[f32; BC],
    lse2: f32,
    dp: &[f32; BC],
    delta: f32,
) -> ([f32; BC], [f32; BC]) {
    let p = s.map(|x| simd::exp2::<FMA>(x - lse2));
    let mut ds = [0f32; BC];
    for j in 0..BC {
        ds[j] = p[j] * (dp[j] - delta);
    }
    (p, ds)
}

dispatch! {
    /// Output rows (`[rows, d]`) and natural log-sum-exp (`[rows]`) of a query tile,
    /// by an online softmax over the key tiles up to its diagonal.
    forward => forward_body(x: &Inputs, tile: Tile, out: &mut [f32], lse: &mut [f32])
}

#[inline(always)]
fn forward_body<const FMA: bool>(x: &Inputs, tile: Tile, out: &mut [f32], lse: &mut [f32]) {
    let (d, seg) = (x.dims.head_dim, tile.segment);
    let (rows, dp) = (tile.end - tile.first, simd::padded(d));
    let kv_head = tile.head / x.dims.group();
    let (mut kt, mut values) = (vec![[0f32; BC]; d], vec![0f32; BC * dp]);
    let queries = x.queries(tile);
    let (mut max, mut norm) = (vec![f32::NEG_INFINITY; rows], vec![0f32; rows]);
    let (mut probs, mut acc) = (vec![[0f32; BC]; rows], vec![0f32; rows * dp]);
    let keys = seg.visible(tile.end - 1);
    for first in (0..keys).step_by(BC) {
        let n = BC.min(seg.k_len - first);
        simd::load_transposed(x.k, x.dims.kv_heads, kv_head, seg.k_start + first, n, &mut kt);
        simd::load_rows(x.v, x.dims.kv_heads, kv_head, seg.k_start + first, n, d, &mut values);
        // Scores of four rows at a time (each key row loaded once for the four), the same
        // sums in the same order as one row at a time.
        let mut i = 0;
        while i < rows {
            let block = SCORE_ROWS.min(rows - i);
            let s: [[f32; BC]; SCORE_ROWS] = if block == SCORE_ROWS {
                let row = |r: usize| &queries[(i + r) * d..(i + r + 1) * d];
                simd::rows_times::<FMA, SCORE_ROWS>([row(0), row(1), row(2), row(3)], &kt)
            } else {
                std::array::from_fn(|r| {
                    if r < block {
                        simd::row_times::<FMA>(&queries[(i + r) * d..(i + r + 1) * d], &kt)
                    } else {
                        [0.0; BC]
                    }
                })
            };
            for (r, mut s) in s.into_iter().take(block).enumerate() {
                let row = i + r;
                let limit = seg.visible(tile.first + row).saturating_sub(first).min(n);
                if limit == 0 {
                    probs[row] = [0.0; BC];
                    continue;
                }
                s[limit..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
                let new_max = max[row].max(simd::max(&s));
                probs[row] = s.map(|s| simd::exp2::<FMA>(s - new_max));
                // The first tile always has a visible key, so `max` is finite after it;
                // before it `exp2(-inf) = 0` empties the accumulators.
                let alpha = simd::exp2::<FMA>(max[row] - new_max);
                norm[row] = madd::<FMA>(norm[row], alpha, simd::sum(&probs[row]));
                max[row] = new_max;
                if alpha != 1.0 {
                    acc[row * dp..(row + 1) * dp].iter_mut().for_each(|o| *o *= alpha);
                }
            }
            i += block;
        }
        simd::add_product::<FMA>(&probs, n, &values, dp, &mut acc);
    }
    for i in 0..rows {
        for (o, a) in out[i * d..(i + 1) * d].iter_mut().zip(&acc[i * dp..]) {
            *o = a / norm[i];
        }
        lse[i] = (max[i] + norm[i].log2()) * std::f32::consts::LN_2;
    }
}

dispatch! {
    /// dK and dV (`[n, d]` each) of a key tile of a key/value head: the sums over the
    /// query heads of its group and the query rows that see the tile, in that order.
    backward_kv => backward_kv_body(x: &Inputs, saved: &Saved, tile: Tile, dk: &mut [f32], dv: &mut [f32])
}

#[inline(always)]
fn backward_kv_body<const FMA: bool>(x: &Inputs, saved: &Saved, tile: Tile, dk: &mut [f32], dv: &mut [f32]) {
    let (d, seg, group) = (x.dims.head_dim, tile.segment, x.dims.group());
    let n = tile.end - tile.first;
    let (mut kt, mut vt) = (vec![[0f32; BC]; d], vec![[0f32; BC]; d]);
    x.load(tile.head, seg.k_start + tile.first, n, &mut kt, &mut vt);
    let (mut dkt, mut dvt) = (vec![[0f32; BC]; d], vec![[0f32; BC]; d]);
    let mut query = vec![0f32; d];
    // The first query that sees key `tile.first`: `visible(t) > tile.first`.
    let first_row = (tile.first + seg.q_len).saturating_sub(seg.k_len);
    for head in tile.head * group..(tile.head + 1) * group {
        let mut t = first_row;
        while t < seg.q_len {
            let mut rows =
                RowsKv { x, saved, seg, head, first: tile.first, n, kt: &kt, vt: &vt, query: &mut query };
            if seg.q_len - t >= KV_ROWS {
                rows.add::<FMA, KV_ROWS>(t, &mut dkt, &mut dvt);
                t += KV_ROWS;
            } else {
                rows.add::<FMA, 1>(t, &mut dkt, &mut dvt);
                t += 1;
            }
        }
    }
    for j in 0..n {
        for c in 0..d {
            dk[j * d + c] = dkt[c][j] * x.scale;
            dv[j * d + c] = dvt[c][j];
        }
    }
}

/// Query rows [`backward_kv`] takes at a time.
const KV_ROWS: usize = 4;

/// One key tile's view of the backward, for [`RowsKv::add`].
struct RowsKv<'a, 'b> {
    x: &'a Inputs<'a>,
    saved: &'a Saved<'a>,
    seg: Segment,
    head: usize,
    first: usize,
    n: usize,
    kt: &'b [[f32; BC]],
    vt: &'b [[f32; BC]],
    query: &'b mut [f32],
}

impl RowsKv<'_, '_> {
    /// Adds query rows `t..t + R` of the head to the transposed dK and dV of the tile.
    #[inline(always)]
    fn add<const FMA: bool, const R: usize>(
        &mut self,
        t: usize,
        dkt: &mut [[f32; BC]],
        dvt: &mut [[f32; BC]],
    ) {
        let (x, saved, d) = (self.x, self.saved, self.x.dims.head_dim);
        let (mut probs, mut grads) = ([[0f32; BC]; R], [[0f32; BC]; R]);
        let (mut queries, mut grads_out): ([&[f32]; R], [&[f32]; R]) = ([&[]; R], [&[]; R]);
        for r in 0..R {
            let token = self.seg.q_start + t + r;
            let limit = (self.seg.visible(t + r) - self.first).min(self.n);
            x.query(token, self.head, self.query);
            let row = self.head * saved.tokens + token;
            let at = (token * x.dims.q_heads + self.head) * d;
            grads_out[r] = &saved.grad_out[at..at + d];
            queries[r] = &x.q[at..at + d];
            let s = scores::<FMA>(self.query, self.kt, limit);
            (probs[r], grads[r]) =
                probs_and_grad::<FMA>(&s, saved.lse2[row], grads_out[r], self.vt, saved.delta[row]);
        }
        simd::add_outer::<FMA, R>(dvt, grads_out, &probs);
        simd::add_outer::<FMA, R>(dkt, queries, &grads);
    }
}

dispatch! {
    /// dQ (`[rows, d]`) of a query tile of a query head: the sum over the key tiles up to
    /// its diagonal, in order.
    backward_q => backward_q_body(x: &Inputs, saved: &Saved, tile: Tile, dq: &mut [f32])
}

#[inline(always)]
fn backward_q_body<const FMA: bool>(x: &Inputs, saved: &Saved, tile: Tile, dq: &mut [f32]) {
    let (d, seg) = (x.dims.head_dim, tile.segment);
    let (rows, dp) = (tile.end - tile.first, simd::padded(d));
    let kv_head = tile.head / x.dims.group();
    let (mut kt, mut vt, mut keys_by_row) = (vec![[0f32; BC]; d], vec![[0f32; BC]; d], vec![0f32; BC * dp]);
    let queries = x.queries(tile);
    let (mut grads, mut acc) = (vec![[0f32; BC]; rows], vec![0f32; rows * dp]);
    let keys = seg.visible(tile.end - 1);
    for first in (0..keys).step_by(BC) {
        let n = BC.min(seg.k_len - first);
        x.load(kv_head, seg.k_start + first, n, &mut kt, &mut vt);
        simd::load_rows(x.k, x.dims.kv_heads, kv_head, seg.k_start + first, n, d, &mut keys_by_row);
        let query = |i: usize| &queries[i * d..(i + 1) * d];
        let grad_out = |i: usize| {
            let at = ((seg.q_start + tile.first + i) * x.dims.q_heads + tile.head) * d;
            &saved.grad_out[at..at + d]
        };
        let mut i = 0;
        while i < rows {
            // Four rows at a time where they all see the whole tile (each key row loaded
            // once for the four; the same sums in the same order as one at a time). Keys
            // past the tile's end then go unmasked: `add_product` reads only the first `n`.
            let whole = (0..SCORE_ROWS).all(|r| i + r < rows && seg.visible(tile.first + i + r) >= first + n);
            let block = if whole { SCORE_ROWS } else { 1 };
            let (s, dp): ([[f32; BC]; SCORE_ROWS], [[f32; BC]; SCORE_ROWS]) = if whole {
                (
                    simd::rows_times::<FMA, SCORE_ROWS>(std::array::from_fn(|r| query(i + r)), &kt),
                    simd::rows_times::<FMA, SCORE_ROWS>(std::array::from_fn(|r| grad_out(i + r)), &vt),
                )
            } else {
                let limit = seg.visible(tile.first + i).saturating_sub(first).min(n);
                if limit == 0 {
                    grads[i] = [0.0; BC];
                    i += 1;
                    continue;
                }
                let mut one = ([[0f32; BC]; SCORE_ROWS], [[0f32; BC]; SCORE_ROWS]);
                one.0[0] = scores::<FMA>(query(i), &kt, limit);
                one.1[0] = simd::row_times::<FMA>(grad_out(i), &vt);
                one
            };
            for r in 0..block {
                let row = tile.head * saved.tokens + seg.q_start + tile.first + i + r;
                grads[i + r] = probs_and_grad_of::<FMA>(&s[r], saved.lse2[row], &dp[r], saved.delta[row]).1;
            }
            i += block;
        }
        simd::add_product::<FMA>(&grads, n, &keys_by_row, dp, &mut acc);
    }
    for (g, a) in dq.chunks_exact_mut(d).zip(acc.chunks_exact(dp)) {
        g.iter_mut().zip(a).for_each(|(g, a)| *g = a * x.scale);
    }
}
