//! The flash-attention kernels under the emulation against a naive f64 attention per
//! segment and head: causal with flash-attn's bottom-right alignment, never across
//! segments, grouped-query heads (ratios 1, 2, 5 and 8), head sizes 64 and 128. Packed
//! documents (the same boundaries for queries and keys): documents of one token and
//! lengths that are not multiples of the tiles, a row of one document and a row of fifty,
//! padding. Queries against a longer key side: a chunk whose diagonal cuts the key tiles
//! off their boundaries, the two chunks a rank of context parallelism holds, padding on
//! both sides and keys no query sees. Outputs are poisoned first; forward output and
//! log-sum-exp, then dQ, dK and dV.

use std::ops::Range;

use common::{bf16_nan, to_bits, to_f32, values};
use davinci_kernels::emulated::{
    flash_attention_bwd, flash_attention_fwd, AttentionGrads, AttentionShape, Bf16, Kernels, Segments,
};

mod common;

struct Reference {
    out: Vec<f64>,
    lse: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

/// Attention and its gradients in f64, one segment and head at a time: the query at
/// offset t of a segment sees the keys at offsets `0..=t + (k_len - q_len)`.
fn reference(s: AttentionShape, x: &Inputs<f32>, cu: Segments<'_>, scale: f64) -> Reference {
    let d = s.head_dim;
    let group = s.q_heads / s.kv_heads;
    let at_q = |t: usize, h: usize| (t * s.q_heads + h) * d;
    let at_kv = |t: usize, h: usize| (t * s.kv_heads + h) * d;
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
    let Inputs { q, k, v, d_out } = x;
    let mut r = Reference {
        out: vec![0.0; q.len()],
        lse: vec![0.0; s.q_heads * s.q_tokens],
        dq: vec![0.0; q.len()],
        dk: vec![0.0; k.len()],
        dv: vec![0.0; v.len()],
    };
    for (wq, wk) in cu.q.windows(2).zip(cu.k.windows(2)) {
        let (q_start, q_end, k_start, k_end) =
            (wq[0] as usize, wq[1] as usize, wk[0] as usize, wk[1] as usize);
        for h in 0..s.q_heads {
            let kv = h / group;
            for i in q_start..q_end {
                let keys = k_start..=k_end - (q_end - i);
                let qi = &q[at_q(i, h)..at_q(i, h) + d];
                let scores: Vec<f64> =
                    keys.clone().map(|j| scale * dot(qi, &k[at_kv(j, kv)..at_kv(j, kv) + d])).collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                let p: Vec<f64> = scores.iter().map(|x| (x - max).exp() / sum).collect();
                r.lse[h * s.q_tokens + i] = max + sum.ln();
                let doi = &d_out[at_q(i, h)..at_q(i, h) + d];
                let dp: Vec<f64> =
                    keys.clone().map(|j| dot(doi, &v[at_kv(j, kv)..at_kv(j, kv) + d])).collect();
                let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for (n, j) in keys.enumerate() {
                    let ds = p[n] * (dp[n] - delta);
                    for c in 0..d {
                        r.out[at_q(i, h) + c] += p[n] * v[at_kv(j, kv) + c] as f64;
                        r.dv[at_kv(j, kv) + c] += p[n] * doi[c] as f64;
                        r.dq[at_q(i, h) + c] += scale * ds * k[at_kv(j, kv) + c] as f64;
                        r.dk[at_kv(j, kv) + c] += scale * ds * qi[c] as f64;
                    }
                }
            }
        }
    }
    r
}

/// ||a - b|| / ||b|| over all elements; NaN fails.
fn error(got: &[f32], want: &[f64]) -> f64 {
    assert!(got.iter().all(|v| v.is_finite()), "a non-finite output (an element left unwritten?)");
    let diff: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).powi(2)).sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// q, k, v and the output's gradient, as bf16 bits or as the f32 values they hold.
struct Inputs<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    d_out: Vec<T>,
}

impl Inputs<Bf16> {
    /// Uniform in `-amplitude..amplitude` (v and the gradient in -1..1).
    fn random(s: AttentionShape, amplitude: f64) -> Self {
        let seed = (s.q_tokens * 31 + s.k_tokens * 11 + s.q_heads * 7 + s.head_dim) as u64;
        Self {
            q: to_bits(&values(s.elements(false), seed, amplitude)),
            k: to_bits(&values(s.elements(true), seed + 1, amplitude)),
            v: to_bits(&values(s.elements(true), seed + 2, 1.0)),
            d_out: to_bits(&values(s.elements(false), seed + 3, 1.0)),
        }
    }

    fn values(&self) -> Inputs<f32> {
        Inputs { q: to_f32(&self.q), k: to_f32(&self.k), v: to_f32(&self.v), d_out: to_f32(&self.d_out) }
    }
}

/// What the kernels wrote, as f32.
struct Outputs {
    out: Vec<f32>,
    lse: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// The forward and the backward by `kernels` into outputs poisoned with NaN.
fn run(kernels: Kernels, s: AttentionShape, x: &Inputs<Bf16>, cu: Segments<'_>, scale: f64) -> Outputs {
    let (mut out, mut lse) = (vec![bf16_nan(); x.q.len()], vec![f32::NAN; s.q_heads * s.q_tokens]);
    flash_attention_fwd(kernels, s, &x.q, &x.k, &x.v, cu, scale as f32, &mut out, &mut lse).unwrap();
    let (mut dq, mut dk, mut dv) =
        (vec![bf16_nan(); x.q.len()], vec![bf16_nan(); x.k.len()], vec![bf16_nan(); x.v.len()]);
    let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
    flash_attention_bwd(kernels, s, &x.q, &x.k, &x.v, &out, &x.d_out, &lse, cu, scale as f32, grads).unwrap();
    Outputs { out: to_f32(&out), lse, dq: to_f32(&dq), dk: to_f32(&dk), dv: to_f32(&dv) }
}

fn compare(name: &str, got: &Outputs, want: &Reference) {
    let e_out = error(&got.out, &want.out);
    let e_lse = got.lse.iter().zip(&want.lse).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    assert!(e_out < 1e-2, "{name}: output off by {e_out:e}");
    assert!(e_lse < 1e-3, "{name}: log-sum-exp off by {e_lse:e}");
    for (what, got, want) in [("dq", &got.dq, &want.dq), ("dk", &got.dk, &want.dk), ("dv", &got.dv, &want.dv)]
    {
        let e = error(got, want);
        assert!(e < 2e-2, "{name}: {what} off by {e:e}");
    }
}

/// Segments of `(queries, keys)` rows, then padding rows on each side, and the heads, run
/// by `kernels`.
struct Case<'a> {
    kernels: Kernels,
    name: &'a str,
    segments: &'a [(usize, usize)],
    padding: (usize, usize),
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    amplitude: f64,
}

/// Boundaries rising by `lengths` from 0.
fn boundaries(lengths: impl Iterator<Item = usize>) -> Vec<u32> {
    let mut cu = vec![0];
    for l in lengths {
        cu.push(cu[cu.len() - 1] + l as u32);
    }
    cu
}

/// The rows `ranges` of a flat `[tokens, heads, head_dim]` tensor (`width` = heads x
/// head_dim), one after another.
fn gather<T: Copy>(x: &[T], width: usize, ranges: &[Range<usize>]) -> Vec<T> {
    ranges.iter().flat_map(|r| &x[r.start * width..r.end * width]).copied().collect()
}

/// The kernels against the reference; every row of padding and every key that no query
/// sees exactly zero in the outputs and gradients.
fn check_case(c: Case) {
    let cu_q = boundaries(c.segments.iter().map(|&(q, _)| q));
    let cu_k = boundaries(c.segments.iter().map(|&(_, k)| k));
    let cu = Segments { q: &cu_q, k: &cu_k };
    let (q_pad, k_pad) = cu.padding_start();
    let s = AttentionShape {
        q_tokens: q_pad + c.padding.0,
        k_tokens: k_pad + c.padding.1,
        q_heads: c.q_heads,
        kv_heads: c.kv_heads,
        head_dim: c.head_dim,
    };
    let x = Inputs::random(s, c.amplitude);
    let scale = 1.0 / (c.head_dim as f64).sqrt();
    let got = run(c.kernels, s, &x, cu, scale);
    compare(c.name, &got, &reference(s, &x.values(), cu, scale));

    let (q_row, kv_row) = (s.q_heads * s.head_dim, s.kv_heads * s.head_dim);
    let zero = |v: &[f32]| v.iter().all(|&x| x == 0.0);
    let unseen_keys = cu.q.windows(2).zip(cu.k.windows(2)).filter(|(q, _)| q[0] == q[1]);
    let unseen_keys = unseen_keys.map(|(_, k)| k[0] as usize..k[1] as usize);
    for rows in unseen_keys.chain(std::iter::once(k_pad..s.k_tokens)) {
        let elements = rows.start * kv_row..rows.end * kv_row;
        assert!(zero(&got.dk[elements.clone()]) && zero(&got.dv[elements]), "{}: keys {rows:?}", c.name);
    }
    let padding = q_pad * q_row..;
    assert!(zero(&got.out[padding.clone()]) && zero(&got.dq[padding]), "{}: padding queries", c.name);
    assert!(got.lse.chunks(s.q_tokens).all(|head| zero(&head[q_pad..])), "{}: padding lse", c.name);
}

/// Packed documents: each its own queries and keys.
fn check(
    kernels: Kernels,
    name: &str,
    lengths: &[usize],
    padding: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
) {
    let segments: Vec<_> = lengths.iter().map(|&l| (l, l)).collect();
    check_case(Case {
        kernels,
        name,
        segments: &segments,
        padding: (padding, padding),
        q_heads,
        kv_heads,
        head_dim,
        amplitude: 1.0,
    });
}

#[test]
fn flash_attention_one_token_and_ragged_documents_no_grouping() {
    check(Kernels::MmaSync, "ratio 1, d 64", &[1, 70, 5, 130], 0, 2, 2, 64);
}

#[test]
fn flash_attention_fifty_documents_grouped_by_five() {
    let lengths: Vec<usize> = (0..50).map(|i| 1 + (i * 7) % 9).collect();
    check(Kernels::MmaSync, "fifty documents, ratio 5, d 64", &lengths, 0, 5, 1, 64);
}

#[test]
fn flash_attention_head_dim_128_grouped_by_eight_one_document_and_padding() {
    check(Kernels::MmaSync, "one document, ratio 8, d 128, padding", &[97], 7, 8, 1, 128);
}

/// Inputs of amplitude 6 at head size 64 put scores near +-30 (uniform(-1, 1) inputs keep
/// them near +-1), where the online softmax's rescaling and the exponentials' error show.
#[test]
fn flash_attention_scores_of_thirty_match_the_reference() {
    let case = Case {
        kernels: Kernels::MmaSync,
        name: "scores near 30",
        segments: &[(70, 70), (9, 9)],
        padding: (0, 0),
        q_heads: 2,
        kv_heads: 1,
        head_dim: 64,
        amplitude: 6.0,
    };
    check_case(case);
}

/// Documents of exactly one tile, one row more, and two tiles, with empty documents
/// (repeated `cu_seqlens` entries) before, between and after them.
#[test]
fn flash_attention_documents_on_tile_boundaries_and_empty_documents() {
    check(Kernels::MmaSync, "64, 65, 128 and empty documents", &[0, 64, 0, 65, 128, 0], 3, 2, 2, 64);
}

/// Qwen2.5-32B's heads (40 query heads over 8 kv heads, head size 128) on a document of
/// two query tiles, the second partial. (A 32K-token document is `davinci doctor`'s, on a
/// GPU.)
#[test]
fn flash_attention_qwen_32b_heads_over_several_tiles() {
    check(Kernels::MmaSync, "40 over 8 heads, d 128", &[100], 0, 40, 8, 128);
}

/// A chunk of 70 queries at the end of a segment of 200 keys: the diagonal runs 130 keys
/// ahead, so it cuts the key tiles 2 keys past a boundary, and the dK/dV steps over the
/// queries start off the query tiles (key tile 192's first query is 62).
#[test]
fn a_query_chunk_sees_the_keys_up_to_its_bottom_right_diagonal() {
    check_query_chunk(Kernels::MmaSync);
}

fn check_query_chunk(kernels: Kernels) {
    let case = Case {
        kernels,
        name: "70 queries over 200 keys",
        segments: &[(70, 200), (5, 9)],
        padding: (0, 0),
        q_heads: 2,
        kv_heads: 1,
        head_dim: 64,
        amplitude: 1.0,
    };
    check_case(case);
}

/// Context parallelism over two ranks cuts a document in four chunks; a rank holds chunks
/// i and 3 - i, each a segment against its own copy of the document's keys up to the
/// chunk's end. Each rank's queries get the whole document's output, log-sum-exp and dQ
/// at their rows, and the two ranks' dK and dV, summed over the copies, are the whole
/// document's.
#[test]
fn two_context_parallel_ranks_together_give_the_whole_documents_attention() {
    check_context_parallel_ranks(Kernels::MmaSync);
}

fn check_context_parallel_ranks(kernels: Kernels) {
    let (chunk, q_heads, kv_heads, head_dim, scale) = (40, 2, 1, 64, 0.125);
    let (q_row, kv_row) = (q_heads * head_dim, kv_heads * head_dim);
    let whole = AttentionShape::packed(4 * chunk, q_heads, kv_heads, head_dim);
    let doc = Inputs::random(whole, 1.0);
    let want = reference(whole, &doc.values(), Segments::packed(&[0, 4 * chunk as u32]), scale);
    let (mut dk, mut dv) = (vec![0f32; want.dk.len()], vec![0f32; want.dv.len()]);
    for held in [[0, 3], [1, 2]] {
        let queries = held.map(|c| c * chunk..(c + 1) * chunk);
        let keys = held.map(|c| 0..(c + 1) * chunk);
        let x = Inputs {
            q: gather(&doc.q, q_row, &queries),
            k: gather(&doc.k, kv_row, &keys),
            v: gather(&doc.v, kv_row, &keys),
            d_out: gather(&doc.d_out, q_row, &queries),
        };
        let cu_q = boundaries(queries.iter().map(|r| r.len()));
        let cu_k = boundaries(keys.iter().map(|r| r.len()));
        let cu = Segments { q: &cu_q, k: &cu_k };
        let s =
            AttentionShape { q_tokens: 2 * chunk, k_tokens: cu_k[2] as usize, q_heads, kv_heads, head_dim };
        let got = run(kernels, s, &x, cu, scale);
        let name = format!("the rank holding chunks {held:?}");
        compare(&name, &got, &reference(s, &x.values(), cu, scale));

        let e_out = error(&got.out, &gather(&want.out, q_row, &queries));
        let e_dq = error(&got.dq, &gather(&want.dq, q_row, &queries));
        assert!(e_out < 1e-2 && e_dq < 2e-2, "{name}: output off by {e_out:e}, dq by {e_dq:e}");
        for h in 0..q_heads {
            for (i, row) in queries.iter().cloned().flatten().enumerate() {
                let (got, want) = (got.lse[h * s.q_tokens + i] as f64, want.lse[h * whole.q_tokens + row]);
                assert!((got - want).abs() < 1e-3, "{name}: lse of row {row}, head {h}: {got} for {want}");
            }
        }
        let copies =
            keys.iter().zip(&cu_k).flat_map(|(r, &at)| r.clone().map(move |row| (row, at as usize + row)));
        for (row, copy) in copies {
            for e in 0..kv_row {
                dk[row * kv_row + e] += got.dk[copy * kv_row + e];
                dv[row * kv_row + e] += got.dv[copy * kv_row + e];
            }
        }
    }
    let (e_dk, e_dv) = (error(&dk, &want.dk), error(&dv, &want.dv));
    assert!(e_dk < 2e-2 && e_dv < 2e-2, "summed over the ranks, dk off by {e_dk:e}, dv by {e_dv:e}");
}

/// Query and key padding of different lengths after the last segment, a segment of keys
/// without queries, and a row with no query at all: outputs, log-sum-exp and gradients
/// there are zeros.
#[test]
fn padding_rows_and_keys_no_query_sees_get_zeros() {
    check_padding_and_unseen_keys(Kernels::MmaSync);
}

fn check_padding_and_unseen_keys(kernels: Kernels) {
    let case = |name, segments, padding| Case {
        kernels,
        name,
        segments,
        padding,
        q_heads: 4,
        kv_heads: 2,
        head_dim: 128,
        amplitude: 1.0,
    };
    check_case(case("padding and unseen keys", &[(20, 50), (0, 30), (10, 10)], (5, 9)));
    check_case(case("no query at all", &[(0, 12)], (3, 2)));
}

/// A segment with fewer keys than queries would leave its first queries without a key;
/// boundaries of different counts, or past their buffer, name no rows at all. The forward
/// and the backward of both kernel families refuse each the same way.
#[test]
fn segments_the_kernels_cannot_attend_over_are_refused() {
    for kernels in [Kernels::MmaSync, Kernels::Hopper] {
        refuses_bad_segments(kernels);
    }
}

fn refuses_bad_segments(kernels: Kernels) {
    let s = AttentionShape { q_tokens: 20, k_tokens: 20, q_heads: 1, kv_heads: 1, head_dim: 64 };
    let x = Inputs::random(s, 1.0);
    let refusal = |q: &[u32], k: &[u32]| {
        let cu = Segments { q, k };
        let (mut out, mut lse) = (vec![0; x.q.len()], vec![0.0; s.q_tokens]);
        let forward =
            flash_attention_fwd(kernels, s, &x.q, &x.k, &x.v, cu, 0.125, &mut out, &mut lse).unwrap_err();
        let (mut dq, mut dk, mut dv) = (vec![0; x.q.len()], vec![0; x.k.len()], vec![0; x.v.len()]);
        let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
        let backward =
            flash_attention_bwd(kernels, s, &x.q, &x.k, &x.v, &out, &x.d_out, &lse, cu, 0.125, grads)
                .unwrap_err();
        // The message, without the backtrace candle may add.
        let message =
            |e: &dyn std::fmt::Display| e.to_string().lines().next().unwrap_or_default().to_string();
        assert_eq!(message(&forward), message(&backward));
        message(&forward)
    };
    let err = refusal(&[0, 10, 18], &[0, 10, 15]);
    assert!(err.contains("segment 1 has 8 queries but only 5 keys"), "{err}");
    let err = refusal(&[0, 10], &[0, 10, 20]);
    assert!(err.contains("cu_seqlens_q has 2 entries and cu_seqlens_k 3"), "{err}");
    let err = refusal(&[0, 10], &[0, 21]);
    assert!(err.contains("cu_seqlens_k [0, 21] reach past the buffer's 20 rows"), "{err}");
}

/// The backward's inputs are copied 16 bytes at a time: a d_out that starts off a 16-byte
/// boundary is refused before anything runs, naming it (the op copies such a view first).
#[test]
fn a_misaligned_gradient_is_refused_before_launch() {
    let (tokens, d) = (8, 64);
    let s = AttentionShape::packed(tokens, 1, 1, d);
    let n = tokens * d;
    let q = to_bits(&values(n, 1, 1.0));
    let (out, lse) = (vec![0u16; n], vec![0.0f32; tokens]);
    let shifted = vec![0u16; n + 8];
    let d_out = if (shifted.as_ptr() as usize).is_multiple_of(16) { &shifted[1..=n] } else { &shifted[..n] };
    let (mut dq, mut dk, mut dv) = (vec![0u16; n], vec![0u16; n], vec![0u16; n]);
    let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
    let cu = [0, tokens as u32];
    let err = flash_attention_bwd(
        Kernels::MmaSync,
        s,
        &q,
        &q,
        &q,
        &out,
        d_out,
        &lse,
        Segments::packed(&cu),
        0.125,
        grads,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("d_out") && err.contains("aligned"), "{err}");
}

/// Hopper's kernels (`kernels/flash_attention_sm90.cu`: wgmma, TMA, warp specialisation),
/// which the op picks on compute capability 9.0, against the same reference: ragged
/// documents, GQA, head sizes 64 and 128, documents of several key tiles (so that dQ's
/// sum takes its key tiles' turns and the stages of K, V, Q and dO come round again), a query
/// chunk over a longer key side, context parallelism's two chunks, padding and keys no
/// query sees.
mod hopper {
    use super::*;

    #[test]
    fn hopper_kernels_ragged_documents_no_grouping() {
        check(Kernels::Hopper, "hopper, ratio 1, d 64", &[1, 70, 5, 130], 0, 2, 2, 64);
    }

    #[test]
    fn hopper_kernels_one_document_of_three_tiles_grouped_by_four_with_padding() {
        check(Kernels::Hopper, "hopper, 300 rows, ratio 4, d 128, padding", &[300], 7, 4, 1, 128);
    }

    /// Five key tiles: the forward's three stages of K and V come round again (the producer
    /// waits on their "empty" barriers, the consumers on the second phase of their "full"
    /// ones), and five key tiles add into each late dQ tile in turn.
    #[test]
    fn hopper_kernels_one_document_of_five_key_tiles_reuses_the_stages() {
        check(Kernels::Hopper, "hopper, 520 rows, ratio 2, d 64", &[520], 0, 2, 1, 64);
    }

    #[test]
    fn hopper_kernels_documents_on_tile_boundaries_and_empty_documents() {
        check(
            Kernels::Hopper,
            "hopper, 128, 129, 64 and empty documents",
            &[0, 128, 0, 129, 64, 0],
            3,
            2,
            1,
            64,
        );
    }

    #[test]
    fn hopper_kernels_query_chunk_sees_the_keys_up_to_its_diagonal() {
        check_query_chunk(Kernels::Hopper);
    }

    #[test]
    fn hopper_kernels_context_parallel_ranks_give_the_whole_documents_attention() {
        check_context_parallel_ranks(Kernels::Hopper);
    }

    #[test]
    fn hopper_kernels_give_zeros_to_padding_and_keys_no_query_sees() {
        check_padding_and_unseen_keys(Kernels::Hopper);
    }
}
