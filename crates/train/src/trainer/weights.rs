//! Starting weights as the optimizer holds them: flat fp32 masters, one per parameter.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use davinci_model::names::parameter_shapes;
use davinci_model::{load_checkpoint, Config, Qwen2};

use crate::error::{Result, TrainError};
use crate::optimizer::ParamState;

/// Fresh optimizer state (zero moments) with `model`'s weights as the masters.
pub fn params_from_model(model: &Qwen2) -> Result<Vec<ParamState>> {
    let mut tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    parameter_shapes(model.config())
        .into_iter()
        .map(|(name, _)| {
            let tensor = tensors
                .remove(&name)
                .ok_or_else(|| TrainError::Invalid(format!("the model has no tensor `{name}`")))?;
            let master = tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            Ok(ParamState::new(&name, master))
        })
        .collect()
}

/// Fresh optimizer state from a Hugging Face checkpoint, which must have `config`'s shape.
pub fn params_from_checkpoint(dir: &Path, config: &Config) -> Result<Vec<ParamState>> {
    let model = load_checkpoint(dir, &Device::Cpu, Some(DType::F32))?;
    let theirs = parameter_shapes(model.config());
    if theirs != parameter_shapes(config) {
        return Err(TrainError::Invalid(format!(
            "{}: the checkpoint's shape differs from the recipe's model ({} vs {} parameters)",
            dir.display(),
            model.config().num_parameters(),
            config.num_parameters()
        )));
    }
    params_from_model(&model)
}
