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

fn check(name: &str, lengths: &[usize], padding: usize, q_heads: usize, kv_heads: usize, head_dim: usize) {
    let mut cu = vec![0u32];
    for &l in lengths {
        cu.push(cu.last().unwrap() + l as u32);
    }
    let tokens = *cu.last().unwrap() as usize + padding;
    let s = AttentionShape { tokens, q_heads, kv_heads, head_dim };
    let seed = (tokens * 31 + q_heads * 7 + head_dim) as u64;
    let q = to_bits(&values(tokens * q_heads * head_dim, seed, 1.0));
    let k = to_bits(&values(tokens * kv_heads * head_dim, seed + 1, 1.0));
    let v = to_bits(&values(tokens * kv_heads * head_dim, seed + 2, 1.0));
    let d_out = to_bits(&values(tokens * q_heads * head_dim, seed + 3, 1.0));
    let scale = 1.0 / (head_dim as f64).sqrt();

    let (mut out, mut lse) = (vec![bf16_nan(); q.len()], vec![f32::NAN; q_heads * tokens]);
    flash_attention_fwd(s, &q, &k, &v, &cu, scale as f32, &mut out, &mut lse);
    let want = reference(s, &to_f32(&q), &to_f32(&k), &to_f32(&v), &to_f32(&d_out), &cu, scale);
    let e_out = error(&to_f32(&out), &want.out);
    let e_lse = lse.iter().zip(&want.lse).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max);
    assert!(e_out < 1e-2, "{name}: output off by {e_out:e}");
    assert!(e_lse < 1e-3, "{name}: log-sum-exp off by {e_lse:e}");

    let (mut dq, mut dk, mut dv) =
        (vec![bf16_nan(); q.len()], vec![bf16_nan(); k.len()], vec![bf16_nan(); v.len()]);
    let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
    flash_attention_bwd(s, &q, &k, &v, &out, &d_out, &lse, &cu, scale as f32, grads);
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
