//! The model with bf16 weights: it runs, stays close to the f32 model, and its loss is
//! computed in f32.

mod common;

use candle_core::{DType, Device};
use common::{assert_close, model_fixture, Expected};
use davinci_model::{load_checkpoint, PackedLayout};

#[test]
fn bf16_weights_track_the_f32_model() {
    let expected = Expected::load("gqa-untied");
    let model = load_checkpoint(&model_fixture("gqa-untied"), &Device::Cpu, Some(DType::BF16)).unwrap();
    for n in 0..expected.sequences() {
        let ids = expected.input_ids(n);
        let layout = PackedLayout::single(ids.len()).unwrap();
        let logits = model.logits(&ids, &layout).unwrap();
        assert_eq!(logits.dtype(), DType::BF16);
        // bf16 has 8 bits of mantissa; two layers of rounding stay within a few percent.
        assert_close(&format!("bf16 logits.{n}"), &logits, expected.tensor(&format!("logits.{n}")), 3e-2);
        let loss = model.loss(&ids, &expected.labels(n), &layout).unwrap();
        assert_eq!(loss.dtype(), DType::F32);
        let (got, want) = (loss.to_scalar::<f32>().unwrap(), expected.loss(n));
        assert!((got - want).abs() < 2e-2 * want, "bf16 loss.{n}: {got} vs {want}");
    }
}
