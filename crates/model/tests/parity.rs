//! The model against transformers' `Qwen2ForCausalLM`: logits, loss and every
//! parameter's gradient, from the fixtures `scripts/make_fixtures.py` writes.

mod common;

use candle_core::Tensor;
use common::{assert_close, load_fixture_model, Expected, MODEL_FIXTURES};
use davinci_model::PackedLayout;

#[test]
fn logits_and_loss_match_transformers() {
    for name in MODEL_FIXTURES {
        let model = load_fixture_model(name);
        let expected = Expected::load(name);
        assert!(expected.sequences() >= 3);
        for n in 0..expected.sequences() {
            let ids = expected.input_ids(n);
            let layout = PackedLayout::single(ids.len()).unwrap();
            let logits = model.logits(&ids, &layout).unwrap();
            assert_close(
                &format!("{name} logits.{n}"),
                &logits,
                expected.tensor(&format!("logits.{n}")),
                1e-4,
            );
            let loss: f32 = model.loss(&ids, &expected.labels(n), &layout).unwrap().to_scalar().unwrap();
            let want = expected.loss(n);
            assert!((loss - want).abs() <= 1e-5 * want.abs().max(1.0), "{name} loss.{n}: {loss} vs {want}");
        }
    }
}

#[test]
fn every_parameter_gradient_matches_transformers() {
    for name in MODEL_FIXTURES {
        let (model, vars) = load_fixture_model(name).into_trainable().unwrap();
        let expected = Expected::load(name);
        for n in 0..expected.sequences() {
            let ids = expected.input_ids(n);
            let layout = PackedLayout::single(ids.len()).unwrap();
            let grads = model.loss(&ids, &expected.labels(n), &layout).unwrap().backward().unwrap();
            let mut checked = 0;
            for (param, var) in &vars {
                let got = grads.get(var).unwrap_or_else(|| panic!("{name}: no gradient for {param}"));
                let want = expected.tensor(&format!("grad.{n}.{param}"));
                assert_close(&format!("{name} grad.{n}.{param}"), got, want, 1e-4);
                checked += 1;
            }
            let in_fixture = expected.0.keys().filter(|k| k.starts_with(&format!("grad.{n}."))).count();
            assert_eq!(checked, in_fixture, "{name}: every parameter transformers has is checked");
        }
    }
}

/// One row holding the three fixture sequences gives, per document, what each gives
/// alone: the same logits, and as gradient the token-weighted mean of the per-document
/// gradients (the loss is a mean over all counted tokens of the row).
#[test]
fn packed_row_equals_documents_run_alone() {
    for name in MODEL_FIXTURES {
        let (model, vars) = load_fixture_model(name).into_trainable().unwrap();
        let expected = Expected::load(name);
        let docs: Vec<usize> = (0..expected.sequences()).collect();
        let ids: Vec<u32> = docs.iter().flat_map(|&n| expected.input_ids(n)).collect();
        let labels: Vec<i64> = docs.iter().flat_map(|&n| expected.labels(n)).collect();
        let lengths: Vec<usize> = docs.iter().map(|&n| expected.input_ids(n).len()).collect();
        let layout = PackedLayout::from_lengths(&lengths).unwrap();
        assert_eq!(layout.positions()[lengths[0]], 0, "positions restart at each document");

        let logits = model.logits(&ids, &layout).unwrap();
        let mut start = 0;
        for (&n, &len) in docs.iter().zip(&lengths) {
            let alone = model.logits(&expected.input_ids(n), &PackedLayout::single(len).unwrap()).unwrap();
            let packed = logits.narrow(0, start, len).unwrap();
            assert_close(&format!("{name} packed logits of doc {n} vs alone"), &packed, &alone, 1e-5);
            assert_close(
                &format!("{name} packed logits of doc {n} vs transformers"),
                &packed,
                expected.tensor(&format!("logits.{n}")),
                1e-4,
            );
            start += len;
        }

        let counts: Vec<f64> =
            docs.iter().map(|&n| expected.labels(n).iter().filter(|&&l| l != -100).count() as f64).collect();
        let total: f64 = counts.iter().sum();
        let loss = model.loss(&ids, &labels, &layout).unwrap();
        let want_loss: f64 = docs.iter().map(|&n| expected.loss(n) as f64 * counts[n] / total).sum();
        let got_loss = loss.to_scalar::<f32>().unwrap() as f64;
        assert!(
            (got_loss - want_loss).abs() <= 1e-5 * want_loss.max(1.0),
            "{name}: packed loss {got_loss} vs {want_loss}"
        );

        let grads = loss.backward().unwrap();
        for (param, var) in &vars {
            let mut want: Option<Tensor> = None;
            for &n in &docs {
                let part = (expected.tensor(&format!("grad.{n}.{param}")) * (counts[n] / total)).unwrap();
                want = Some(match want {
                    Some(w) => (w + part).unwrap(),
                    None => part,
                });
            }
            assert_close(
                &format!("{name} packed grad {param}"),
                grads.get(var).unwrap(),
                &want.unwrap(),
                1e-4,
            );
        }
    }
}
