//! The flash-attention kernels under the emulation against a naive f64 attention per
//! document and head: causal, never across documents, grouped-query heads (ratios 1, 5 and
//! 8), head sizes 64 and 128, documents of one token and lengths that are not multiples of
//! the tiles, a row of one document and a row of fifty, and a row that ends in padding. Outputs are
//! poisoned first; forward output and log-sum-exp, then dQ, dK and dV.

use common::{bf16_nan, to_bits, to_f32, values};
use davinci_kernels::emulated::{flash_attention_bwd, flash_attention_fwd, AttentionGrads, AttentionShape};

mod common;

struct Reference {
    out: Vec<f64>,
    lse: Vec<f64>,
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
}

/// Attention and its gradients in f64, one document and head at a time.
fn reference(
    s: AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d_out: &[f32],
    cu: &[u32],
    scale: f64,
) -> Reference {
    let d = s.head_dim;
    let group = s.q_heads / s.kv_heads;
    let at_q = |t: usize, h: usize| (t * s.q_heads + h) * d;
    let at_kv = |t: usize, h: usize| (t * s.kv_heads + h) * d;
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
    let mut r = Reference {
        out: vec![0.0; q.len()],
        lse: vec![0.0; s.q_heads * s.tokens],
        dq: vec![0.0; q.len()],
        dk: vec![0.0; k.len()],
        dv: vec![0.0; v.len()],
    };
    for w in cu.windows(2) {
        let (start, end) = (w[0] as usize, w[1] as usize);
        for h in 0..s.q_heads {
            let kv = h / group;
            for i in start..end {
                let qi = &q[at_q(i, h)..at_q(i, h) + d];
                let scores: Vec<f64> =
                    (start..=i).map(|j| scale * dot(qi, &k[at_kv(j, kv)..at_kv(j, kv) + d])).collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
                let p: Vec<f64> = scores.iter().map(|x| (x - max).exp() / sum).collect();
                r.lse[h * s.tokens + i] = max + sum.ln();
                let doi = &d_out[at_q(i, h)..at_q(i, h) + d];
                let dp: Vec<f64> =
                    (start..=i).map(|j| dot(doi, &v[at_kv(j, kv)..at_kv(j, kv) + d])).collect();
                let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for (n, j) in (start..=i).enumerate() {
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

/// The row's documents and heads; inputs uniform in `-amplitude..amplitude`.
struct Case<'a> {
    name: &'a str,
    lengths: &'a [usize],
    padding: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    amplitude: f64,
}

fn check(name: &str, lengths: &[usize], padding: usize, q_heads: usize, kv_heads: usize, head_dim: usize) {
    check_case(Case { name, lengths, padding, q_heads, kv_heads, head_dim, amplitude: 1.0 });
}

fn check_case(c: Case) {
    let Case { name, lengths, padding, q_heads, kv_heads, head_dim, amplitude } = c;
    let mut cu = vec![0u32];
    for &l in lengths {
        cu.push(cu.last().unwrap() + l as u32);
    }
    let tokens = *cu.last().unwrap() as usize + padding;
    let s = AttentionShape { tokens, q_heads, kv_heads, head_dim };
    let seed = (tokens * 31 + q_heads * 7 + head_dim) as u64;
    let q = to_bits(&values(tokens * q_heads * head_dim, seed, amplitude));
    let k = to_bits(&values(tokens * kv_heads * head_dim, seed + 1, amplitude));
    let v = to_bits(&values(tokens * kv_heads * head_dim, seed + 2, 1.0));
    let d_out = to_bits(&values(tokens * q_heads * head_dim, seed + 3, 1.0));
    let scale = 1.0 / (head_dim as f64).sqrt();

    let (mut out, mut lse) = (vec![bf16_nan(); q.len()], vec![f32::NAN; q_heads * tokens]);
    flash_attention_fwd(s, &q, &k, &v, &cu, scale as f32, &mut out, &mut lse).unwrap();
    let want = reference(s, &to_f32(&q), &to_f32(&k), &to_f32(&v), &to_f32(&d_out), &cu, scale);
    let e_out = error(&to_f32(&out), &want.out);
    let e_lse = lse.iter().zip(&want.lse).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    assert!(e_out < 1e-2, "{name}: output off by {e_out:e}");
    assert!(e_lse < 1e-3, "{name}: log-sum-exp off by {e_lse:e}");

    let (mut dq, mut dk, mut dv) =
        (vec![bf16_nan(); q.len()], vec![bf16_nan(); k.len()], vec![bf16_nan(); v.len()]);
    let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
    flash_attention_bwd(s, &q, &k, &v, &out, &d_out, &lse, &cu, scale as f32, grads).unwrap();
    for (what, got, want) in [("dq", &dq, &want.dq), ("dk", &dk, &want.dk), ("dv", &dv, &want.dv)] {
        let e = error(&to_f32(got), want);
        assert!(e < 2e-2, "{name}: {what} off by {e:e}");
    }
    if padding > 0 {
        let first = (tokens - padding) * q_heads * head_dim;
        assert!(
            to_f32(&out[first..]).iter().all(|&x| x == 0.0),
            "{name}: padding rows of the output are not zero"
        );
    }
}

#[test]
fn flash_attention_one_token_and_ragged_documents_no_grouping() {
    check("ratio 1, d 64", &[1, 70, 5, 130], 0, 2, 2, 64);
}

#[test]
fn flash_attention_fifty_documents_grouped_by_five() {
    let lengths: Vec<usize> = (0..50).map(|i| 1 + (i * 7) % 9).collect();
    check("fifty documents, ratio 5, d 64", &lengths, 0, 5, 1, 64);
}

#[test]
fn flash_attention_head_dim_128_grouped_by_eight_one_document_and_padding() {
    check("one document, ratio 8, d 128, padding", &[97], 7, 8, 1, 128);
}

/// Inputs of amplitude 6 at head size 64 put scores near +-30 (uniform(-1, 1) inputs keep
/// them near +-1), where the online softmax's rescaling and the exponentials' error show.
#[test]
fn flash_attention_scores_of_thirty_match_the_reference() {
    let case = Case {
        name: "scores near 30",
        lengths: &[70, 9],
        padding: 0,
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
    check("64, 65, 128 and empty documents", &[0, 64, 0, 65, 128, 0], 3, 2, 2, 64);
}

/// Qwen2.5-32B's heads (40 query heads over 8 kv heads, head size 128) on a document of
/// two query tiles, the second partial. (A 32K-token document is `davinci doctor`'s, on a
/// GPU.)
#[test]
fn flash_attention_qwen_32b_heads_over_several_tiles() {
    check("40 over 8 heads, d 128", &[100], 0, 40, 8, 128);
}

/// The backward's inputs are copied 16 bytes at a time: a d_out that starts off a 16-byte
/// boundary is refused before anything runs, naming it (the op copies such a view first).
#[test]
fn a_misaligned_gradient_is_refused_before_launch() {
    let (tokens, d) = (8, 64);
    let s = AttentionShape { tokens, q_heads: 1, kv_heads: 1, head_dim: d };
    let n = tokens * d;
    let q = to_bits(&values(n, 1, 1.0));
    let (out, lse) = (vec![0u16; n], vec![0.0f32; tokens]);
    let shifted = vec![0u16; n + 8];
    let d_out = if (shifted.as_ptr() as usize).is_multiple_of(16) { &shifted[1..=n] } else { &shifted[..n] };
    let (mut dq, mut dk, mut dv) = (vec![0u16; n], vec![0u16; n], vec![0u16; n]);
    let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
    let cu = [0, tokens as u32];
    let err =
        flash_attention_bwd(s, &q, &q, &q, &out, d_out, &lse, &cu, 0.125, grads).unwrap_err().to_string();
    assert!(err.contains("d_out") && err.contains("aligned"), "{err}");
}
