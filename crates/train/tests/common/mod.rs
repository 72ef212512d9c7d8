//! What the trainer's integration tests share: the two-stage fixture recipe pointed at a
//! scratch directory, and the layer-wise step's gradients collected by name.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use davinci_model::layerwise::{loss_and_grads, StepStats, WeightSource};
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
    let mut grads: HashMap<String, Tensor> = HashMap::new();
    let stats = loss_and_grads(model, input_ids, labels, layout, &mut |unit| {
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
