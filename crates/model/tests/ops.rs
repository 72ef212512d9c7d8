//! The ops on their own: the chunked linear cross-entropy against a plain full-logits
//! computation on the gradient tape, and attention's document isolation.

mod common;

use candle_core::{DType, Device, Tensor, Var, D};
use common::assert_close;
use davinci_model::ops::{
    attention, linear_cross_entropy, mean_cross_entropy_loss, softmax_last_dim, varlen_causal_attention,
    Segments,
};

fn random(shape: (usize, usize), seed: u64) -> Tensor {
    // A small deterministic generator keeps the test independent of candle's RNG.
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Mean cross-entropy from the full logits, all on candle's tape: the reference.
fn naive_loss(hidden: &Tensor, weight: &Tensor, labels: &[i64]) -> Tensor {
    let logits = hidden.matmul(&weight.t().unwrap()).unwrap();
    let log_probs = (softmax_last_dim(&logits).unwrap()).log().unwrap();
    let rows: Vec<u32> = (0..labels.len() as u32).filter(|&t| labels[t as usize] != -100).collect();
    let targets: Vec<u32> = rows.iter().map(|&t| labels[t as usize] as u32).collect();
    let rows = Tensor::new(rows.as_slice(), &Device::Cpu).unwrap();
    let targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap().unsqueeze(1).unwrap();
    let picked = log_probs.index_select(&rows, 0).unwrap().gather(&targets, D::Minus1).unwrap();
    picked.mean_all().unwrap().neg().unwrap()
}

#[test]
fn chunked_linear_cross_entropy_matches_full_logits_for_any_chunk() {
    let (tokens, hidden_size, vocab) = (37, 24, 101);
    let hidden = Var::from_tensor(&random((tokens, hidden_size), 1)).unwrap();
    let weight = Var::from_tensor(&(random((vocab, hidden_size), 2) * 2.0).unwrap()).unwrap();
    let labels: Vec<i64> =
        (0..tokens).map(|t| if t % 5 == 3 { -100 } else { ((t * 31) % vocab) as i64 }).collect();
    let reference = naive_loss(&hidden, &weight, &labels);
    let ref_grads = reference.backward().unwrap();
    for chunk in [1, 4, 7, 36, 1000] {
        let loss = mean_cross_entropy_loss(&hidden, &weight, &labels, Some(chunk)).unwrap();
        assert_close(&format!("loss, chunk {chunk}"), &loss, &reference, 1e-6);
        let grads = loss.backward().unwrap();
        for (what, var) in [("d_hidden", &hidden), ("d_weight", &weight)] {
            assert_close(
                &format!("{what}, chunk {chunk}"),
                grads.get(var).unwrap(),
                ref_grads.get(var).unwrap(),
                1e-5,
            );
        }
    }
    let out = linear_cross_entropy(&hidden, &weight, &labels, Some(8), false).unwrap();
    assert_eq!(out.count, labels.iter().filter(|&&l| l != -100).count());
    assert!(out.d_hidden.is_none() && out.d_weight.is_none());
}

#[test]
fn cross_entropy_with_no_counted_label_is_zero_and_bad_labels_are_refused() {
    let hidden = random((4, 8), 3);
    let weight = random((10, 8), 4);
    let out = linear_cross_entropy(&hidden, &weight, &[-100; 4], None, true).unwrap();
    assert_eq!((out.count, out.mean()), (0, 0.0));
    assert_eq!(out.d_hidden.unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    let err = linear_cross_entropy(&hidden, &weight, &[1, 2, 10, -100], None, false).unwrap_err().to_string();
    assert!(err.contains("label 10 at position 2"), "{err}");
    let err = linear_cross_entropy(&hidden, &weight, &[1, 2], None, false).unwrap_err().to_string();
    assert!(err.contains("2 labels for 4 tokens"), "{err}");
}

/// Changing a token of one document changes nothing in the others, and nothing earlier
/// in its own document.
#[test]
fn attention_never_crosses_a_document_or_looks_ahead() {
    let (heads, kv_heads, head_dim) = (6, 2, 8);
    let cu = [0u32, 5, 6, 15];
    let tokens = 15;
    let make = |seed| random((tokens, heads * head_dim), seed).reshape((tokens, heads, head_dim)).unwrap();
    let make_kv =
        |seed| random((tokens, kv_heads * head_dim), seed).reshape((tokens, kv_heads, head_dim)).unwrap();
    let (q, k, v) = (make(10), make_kv(11), make_kv(12));
    let base = varlen_causal_attention(&q, &k, &v, &cu, 0.3).unwrap();
    // Perturb token 9 (inside the third document) in k and v.
    let bump = Tensor::zeros((tokens, kv_heads, head_dim), DType::F32, &Device::Cpu)
        .unwrap()
        .slice_assign(
            &[9..10, 0..kv_heads, 0..head_dim],
            &Tensor::ones((1, kv_heads, head_dim), DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
    let changed =
        varlen_causal_attention(&q, &(&k + &bump).unwrap(), &(&v + &bump).unwrap(), &cu, 0.3).unwrap();
    let diff: Vec<f32> = (changed - &base).unwrap().abs().unwrap().sum((1, 2)).unwrap().to_vec1().unwrap();
    for (t, d) in diff.iter().enumerate() {
        if t < 9 {
            assert_eq!(*d, 0.0, "token {t} must not see token 9");
        } else {
            assert!(*d > 0.0, "token {t} sees token 9");
        }
    }
}

/// The tiled CPU attention (the training path) against the reference on the tape: output
/// and dQ, dK, dV, for GQA ratios 1 and 3, documents of length 1 and longer than a block,
/// with one block row at a time and with several.
#[test]
fn tiled_attention_matches_the_reference_forward_and_backward() {
    use davinci_model::ops::attention::{reference, tiled};
    let cu = [0u32, 1, 8, 11, 31];
    let tokens = 31;
    for (heads, kv_heads) in [(4, 4), (6, 2)] {
        let head_dim = 8;
        let var = |h: usize, seed| {
            Var::from_tensor(&random((tokens, h * head_dim), seed).reshape((tokens, h, head_dim)).unwrap())
                .unwrap()
        };
        let (q, k, v) = (var(heads, 20), var(kv_heads, 21), var(kv_heads, 22));
        // A random cotangent, so that every output element's gradient matters.
        let cotangent = random((tokens, heads * head_dim), 23).reshape((tokens, heads, head_dim)).unwrap();
        let want = reference::attention(&q, &k, &v, &Segments::documents(&cu), 0.35).unwrap();
        let want_grads = (&want * &cotangent).unwrap().sum_all().unwrap().backward().unwrap();
        for rows in [Some(1), Some(4), None] {
            let got = tiled::attention(&q, &k, &v, &Segments::documents(&cu), 0.35, rows).unwrap();
            let what = format!("{heads}/{kv_heads} heads, block rows {rows:?}");
            assert_close(&format!("output, {what}"), &got, &want, 1e-5);
            let grads = (&got * &cotangent).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, x) in [("dq", &q), ("dk", &k), ("dv", &v)] {
                assert_close(
                    &format!("{name}, {what}"),
                    grads.get(x).unwrap(),
                    want_grads.get(x).unwrap(),
                    1e-5,
                );
            }
        }
    }
}

/// A chunk of a document's queries with the document's keys up to the chunk's end (the
/// segments context parallelism gives a rank) attends exactly as those rows do in the
/// whole document; the tiled path matches the reference on such segments, forward and
/// backward, with blocks that start mid-chunk.
#[test]
fn query_chunks_of_a_document_attend_as_in_the_whole_document() {
    use davinci_model::ops::attention::{reference, tiled};
    let (heads, kv_heads, head_dim, doc) = (6, 2, 8, 30);
    let make = |h: usize, rows: usize, seed| {
        random((rows, h * head_dim), seed).reshape((rows, h, head_dim)).unwrap()
    };
    let (q, k, v) = (make(heads, doc, 30), make(kv_heads, doc, 31), make(kv_heads, doc, 32));
    let whole = varlen_causal_attention(&q, &k, &v, &[0, doc as u32], 0.3).unwrap();
    // Queries 10..17 and 23..30 (a rank's early and late chunk), keys 0..17 and 0..30, plus
    // a one-token document of its own.
    let (chunks, keys) = ([10..17, 23..30], [0..17, 0..30]);
    let pick = |x: &Tensor, ranges: &[std::ops::Range<usize>]| {
        let parts: Vec<Tensor> = ranges.iter().map(|r| x.narrow(0, r.start, r.len()).unwrap()).collect();
        Tensor::cat(&parts, 0).unwrap()
    };
    let lone = make(heads, 1, 33);
    let lone_kv = make(kv_heads, 1, 34);
    let q_cp = Var::from_tensor(&Tensor::cat(&[pick(&q, &chunks), lone.clone()], 0).unwrap()).unwrap();
    let k_cp = Var::from_tensor(&Tensor::cat(&[pick(&k, &keys), lone_kv.clone()], 0).unwrap()).unwrap();
    let v_cp = Var::from_tensor(&Tensor::cat(&[pick(&v, &keys), lone_kv], 0).unwrap()).unwrap();
    let segments = Segments::new(vec![0, 7, 14, 15], vec![0, 17, 47, 48]).unwrap();
    let got = attention(&q_cp, &k_cp, &v_cp, &segments, 0.3).unwrap();
    assert_close("chunk rows", &got.narrow(0, 0, 14).unwrap(), &pick(&whole, &chunks), 1e-5);
    let alone =
        varlen_causal_attention(&lone, &make(kv_heads, 1, 34), &make(kv_heads, 1, 34), &[0, 1], 0.3).unwrap();
    assert_close("a one-token document", &got.narrow(0, 14, 1).unwrap(), &alone, 1e-6);

    let cotangent = make(heads, 15, 35);
    let want = reference::attention(&q_cp, &k_cp, &v_cp, &segments, 0.3).unwrap();
    let want_grads = (&want * &cotangent).unwrap().sum_all().unwrap().backward().unwrap();
    for rows in [Some(3), None] {
        let got = tiled::attention(&q_cp, &k_cp, &v_cp, &segments, 0.3, rows).unwrap();
        assert_close(&format!("output, block rows {rows:?}"), &got, &want, 1e-5);
        let grads = (&got * &cotangent).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, x) in [("dq", &q_cp), ("dk", &k_cp), ("dv", &v_cp)] {
            let what = format!("{name}, block rows {rows:?}");
            assert_close(&what, grads.get(x).unwrap(), want_grads.get(x).unwrap(), 1e-5);
        }
    }
}

/// Segments with fewer keys than queries, or bounds that fall, are refused.
#[test]
fn segments_with_fewer_keys_than_queries_are_refused() {
    let err = Segments::new(vec![0, 5], vec![0, 4]).unwrap_err().to_string();
    assert!(err.contains("segment 0 has 5 queries but only 4 keys"), "{err}");
    assert!(Segments::new(vec![0, 5, 3], vec![0, 5, 6]).is_err());
    assert!(Segments::new(vec![0, 5], vec![0, 5, 6]).is_err());
}

/// Documents longer than a key tile (64), head sizes that are and are not a multiple of
/// the SIMD width, GQA, and query tiles that straddle the diagonal: output and dQ, dK, dV
/// of the tiled attention against the reference on the tape.
#[test]
fn tiled_attention_over_many_tiles_matches_the_reference() {
    use davinci_model::ops::attention::{reference, tiled};
    let cu = [0u32, 70, 75, 200, 330];
    let tokens = 330;
    for (heads, kv_heads, head_dim) in [(4, 2, 16), (6, 2, 20), (2, 1, 64)] {
        let make =
            |h: usize, seed| random((tokens, h * head_dim), seed).reshape((tokens, h, head_dim)).unwrap();
        let (q, k, v) = (make(heads, 40), make(kv_heads, 41), make(kv_heads, 42));
        let (q, k, v) =
            (Var::from_tensor(&q).unwrap(), Var::from_tensor(&k).unwrap(), Var::from_tensor(&v).unwrap());
        let cotangent = make(heads, 43);
        let scale = 1.0 / (head_dim as f64).sqrt();
        let want = reference::attention(&q, &k, &v, &Segments::documents(&cu), scale).unwrap();
        let want_grads = (&want * &cotangent).unwrap().sum_all().unwrap().backward().unwrap();
        for rows in [Some(13), None] {
            let got = tiled::attention(&q, &k, &v, &Segments::documents(&cu), scale, rows).unwrap();
            let what = format!("{heads}/{kv_heads} heads of {head_dim}, block rows {rows:?}");
            assert_close(&format!("output, {what}"), &got, &want, 1e-5);
            let grads = (&got * &cotangent).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, x) in [("dq", &q), ("dk", &k), ("dv", &v)] {
                let (got, want) = (grads.get(x).unwrap(), want_grads.get(x).unwrap());
                assert_close(&format!("{name}, {what}"), got, want, 1e-5);
            }
        }
    }
}

/// The backward sums in an order fixed by the tiles alone, never by the threads: the
/// same bits on one thread, on several, and twice in a row.
#[test]
fn tiled_attention_backward_is_bitwise_the_same_on_any_number_of_threads() {
    use davinci_model::ops::attention::tiled;
    let (tokens, heads, kv_heads, head_dim) = (300, 6, 2, 16);
    let cu = [0u32, 130, 131, 300];
    let make = |h: usize, seed| random((tokens, h * head_dim), seed).reshape((tokens, h, head_dim)).unwrap();
    let (q, k, v) = (make(heads, 50), make(kv_heads, 51), make(kv_heads, 52));
    let (q, k, v) =
        (Var::from_tensor(&q).unwrap(), Var::from_tensor(&k).unwrap(), Var::from_tensor(&v).unwrap());
    let cotangent = make(heads, 53);
    let run = || {
        let out = tiled::attention(&q, &k, &v, &Segments::documents(&cu), 0.25, None).unwrap();
        let grads = (&out * &cotangent).unwrap().sum_all().unwrap().backward().unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
        };
        [bits(&out), bits(grads.get(&q).unwrap()), bits(grads.get(&k).unwrap()), bits(grads.get(&v).unwrap())]
    };
    let on = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(run);
    let once = on(1);
    for threads in [1, 2, 3, 8] {
        assert!(on(threads) == once, "{threads} threads give other bits than one");
    }
}
