//! What the trainer's integration tests share: the two-stage fixture recipe pointed at a
//! scratch directory, and the layer-wise step's gradients collected by name.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use davinci_model::layerwise::{loss_and_grads_with, Activations, StepStats, WeightSource};
use davinci_model::PackedLayout;
use davinci_train::Recipe;

pub use davinci_testing::{max_rel, model_fixture};

pub fn two_stage_recipe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/two-stage.toml")
}

/// The two-stage fixture recipe, its text edited by `edit`, writing its data and its
/// checkpoints under `root`.
pub fn two_stage_recipe(root: &Path, edit: impl Fn(String) -> String) -> Recipe {
    let path = two_stage_recipe_path();
    let mut recipe = Recipe::parse(&edit(std::fs::read_to_string(&path).unwrap()), &path).unwrap();
    recipe.output_dir = root.join("run");
    recipe.data_dir = root.join("data");
    recipe
}

/// The layer-wise step's loss and the gradients of the *sum* of token losses, in f32,
/// summed by Hugging Face name (a tied embedding is handed to the sink twice).
pub fn collect_grads<S: WeightSource + ?Sized>(
    model: &S,
    input_ids: &[u32],
    labels: &[i64],
    layout: &PackedLayout,
) -> Result<(StepStats, HashMap<String, Tensor>), S::Error> {
    collect_grads_with(model, input_ids, labels, layout, Activations::Recompute)
}

/// [`collect_grads`] with each layer's tape from where `activations` says.
pub fn collect_grads_with<S: WeightSource + ?Sized>(
    model: &S,
    input_ids: &[u32],
    labels: &[i64],
    layout: &PackedLayout,
    activations: Activations,
) -> Result<(StepStats, HashMap<String, Tensor>), S::Error> {
    let mut grads: HashMap<String, Tensor> = HashMap::new();
    let stats = loss_and_grads_with(model, input_ids, labels, layout, activations, &mut |unit| {
        for (name, grad) in unit {
            let grad = grad.to_dtype(DType::F32)?;
            let sum = match grads.remove(&name) {
                Some(previous) => (previous + grad)?,
                None => grad,
            };
            grads.insert(name, sum);
        }
        Ok(())
    })?;
    Ok((stats, grads))
}

/// The step of every scalar event in a TensorBoard event file, in order (the file's first
/// event, its version, has none). Reads the TFRecord framing (length, its CRC, payload,
/// its CRC) and the `step` field (2, a varint) that follows `wall_time` (field 1, 8 bytes).
pub fn event_steps(path: &Path) -> Vec<i64> {
    let bytes = std::fs::read(path).unwrap();
    let (mut at, mut steps) = (0, Vec::new());
    while at < bytes.len() {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        let payload = &bytes[at + 12..at + 12 + len];
        at += 12 + len + 4;
        assert_eq!((payload[0], payload[9]), (0x09, 0x10), "wall_time then step");
        let (mut step, mut shift) = (0u64, 0);
        for &b in &payload[10..] {
            step |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        if !payload.ends_with(b"brain.Event:2") {
            steps.push(step as i64);
        }
    }
    steps
}
