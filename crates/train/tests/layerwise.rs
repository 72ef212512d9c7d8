//! The model's layer-by-layer driver with recompute gives the gradients of a plain
//! whole-model backward.

mod common;

use candle_core::{DType, Device};
use common::{collect_grads, max_rel, model_fixture};
use davinci_model::{load_checkpoint, PackedLayout};

#[test]
fn layerwise_gradients_equal_the_whole_model_backward() {
    for name in ["gqa-untied", "tied"] {
        let model = load_checkpoint(&model_fixture(name), &Device::Cpu, Some(DType::F32)).unwrap();
        let vocab = model.config().vocab_size as u32;
        // Three documents in one row, some labels masked.
        let lengths = [9usize, 1, 14];
        let ids: Vec<u32> = (0..24u32).map(|i| (i * 37 + 5) % vocab).collect();
        let labels: Vec<i64> =
            (0..24).map(|i| if i % 7 == 3 { -100 } else { ((i * 11 + 2) % vocab as usize) as i64 }).collect();
        let layout = PackedLayout::from_lengths(&lengths).unwrap();

        let (layerwise, grads) = collect_grads(&model, &ids, &labels, &layout).unwrap();
        let (trainable, vars) = model.clone().into_trainable().unwrap();
        let loss = trainable.loss(&ids, &labels, &layout).unwrap();
        let whole = loss.backward().unwrap();

        let mean = layerwise.loss_sum / layerwise.count as f64;
        let want = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((mean - want).abs() < 1e-5 * want, "{name}: loss {mean} vs {want}");
        assert_eq!(grads.len(), vars.len(), "{name}: a gradient for every parameter");
        for (param, var) in &vars {
            let got = (grads[param].clone() / layerwise.count as f64).unwrap();
            let rel = max_rel(&got, whole.get(var).unwrap());
            assert!(rel < 1e-5, "{name} {param}: relative difference {rel:e}");
        }
    }
}
