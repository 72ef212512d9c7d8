//! Training checkpoints: the weights in Hugging Face layout (loadable by `davinci logits`
//! and transformers), the optimizer's fp32 state in safetensors, and `trainer_state.json`.
//! Written into a temporary directory and renamed, so a crash mid-write never leaves a
//! directory that looks complete; older checkpoints are pruned only after a new one is.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use davinci_data::loader::LoaderState;
use davinci_model::checkpoint::{write_dir_atomically, write_weights};
use davinci_model::error::io_at;
use davinci_model::names::parameter_shapes;
use davinci_model::{Config, SaveOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optimizer::{AdamW, AdamWConfig, ParamState};

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Where a run is: enough to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub stage: String,
    pub stage_index: usize,
    /// Optimizer steps taken in this stage.
    pub step: u64,
    pub tokens_seen: u64,
    pub loader: LoaderState,
    /// The recipe's parts that must not change across a resume, hashed (see
    /// [`crate::recipe::Recipe::fingerprint`]).
    pub recipe: BTreeMap<String, String>,
    /// Wall-clock seconds the stage has run, over all its invocations.
    #[serde(default)]
    pub elapsed_seconds: f64,
}

/// The directory of the checkpoint after `step` steps of a stage.
pub fn checkpoint_dir(root: &Path, stage: &str, step: u64) -> PathBuf {
    root.join(stage).join(format!("step-{step:08}"))
}

/// Writes a checkpoint into `dir`: weights from the optimizer's fp32 masters, stored in
/// `weights_dtype`.
pub fn save(
    dir: &Path,
    config: &Config,
    optimizer: &AdamW,
    state: &TrainerState,
    weights_dtype: DType,
) -> Result<()> {
    let shapes: HashMap<String, Vec<usize>> = parameter_shapes(config).into_iter().collect();
    let mut weights = Vec::with_capacity(optimizer.params.len());
    let mut moments: HashMap<String, Tensor> = HashMap::new();
    for p in &optimizer.params {
        let shape = shapes
            .get(&p.name)
            .ok_or_else(|| TrainError::Invalid(format!("`{}` is not a parameter of the model", p.name)))?;
        weights.push((p.name.clone(), Tensor::from_slice(&p.master, shape.as_slice(), &Device::Cpu)?));
        for (kind, values) in [("master", &p.master), ("m", &p.m), ("v", &p.v)] {
            moments.insert(
                format!("{kind}.{}", p.name),
                Tensor::from_slice(values, values.len(), &Device::Cpu)?,
            );
        }
    }
    let state_text = serde_json::to_string_pretty(state).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let metadata: HashMap<String, String> = [
        ("steps".to_string(), optimizer.steps.to_string()),
        ("config".to_string(), serde_json::to_string(&optimizer.config).unwrap_or_default()),
    ]
    .into();
    let options = SaveOptions { dtype: Some(weights_dtype), ..SaveOptions::default() };
    write_dir_atomically(
        dir,
        |_| false,
        |tmp| {
            write_weights(tmp, config, &weights, &options)?;
            stall_for_tests(state);
            let optimizer_path = tmp.join(OPTIMIZER_FILE);
            safetensors::serialize_to_file(
                moments.iter().map(|(k, v)| (k.as_str(), v)),
                Some(metadata),
                &optimizer_path,
            )
            .map_err(|e| io_at(&optimizer_path)(std::io::Error::other(e.to_string())))?;
            let state_path = tmp.join(STATE_FILE);
            std::fs::write(&state_path, state_text).map_err(io_at(&state_path))
        },
    )?;
    Ok(())
}

/// Fault injection for the crash test: with `DAVINCI_TEST_STALL_CHECKPOINT=STAGE:STEP`,
/// writing that checkpoint stops for a minute after the weights, so the test can kill the
/// process while the checkpoint is half written.
fn stall_for_tests(state: &TrainerState) {
    if let Ok(target) = std::env::var("DAVINCI_TEST_STALL_CHECKPOINT") {
        if target == format!("{}:{}", state.stage, state.step) {
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }
}

/// Reads a checkpoint: the model config, the optimizer (masters and moments) and the state.
pub fn load(dir: &Path) -> Result<(Config, AdamW, TrainerState)> {
    let config = Config::from_file(&dir.join("config.json"))?;
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(io_at(&state_path))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", state_path.display())))?;
    let optimizer_path = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&optimizer_path).map_err(io_at(&optimizer_path))?;
    let corrupt = |m: String| TrainError::Invalid(format!("{}: {m}", optimizer_path.display()));
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let info = metadata.metadata().clone().unwrap_or_default();
    let steps: u64 =
        info.get("steps").and_then(|s| s.parse().ok()).ok_or_else(|| corrupt("no step count".into()))?;
    let adam: AdamWConfig = info.get("config").and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let mut params = Vec::new();
    for (name, _) in parameter_shapes(&config) {
        let get = |kind: &str| -> Result<Vec<f32>> {
            let key = format!("{kind}.{name}");
            let t = tensors.get(&key).ok_or_else(|| corrupt(format!("missing `{key}`")))?;
            Ok(t.to_dtype(DType::F32)?.to_vec1()?)
        };
        let mut p = ParamState::new(&name, get("master")?);
        p.m = get("m")?;
        p.v = get("v")?;
        params.push(p);
    }
    let mut optimizer = AdamW::new(adam, params);
    optimizer.steps = steps;
    Ok((config, optimizer, state))
}

/// The newest complete checkpoint of a stage: the highest `step-*` directory (temporary
/// directories are hidden and never match).
pub fn latest(root: &Path, stage: &str) -> Option<PathBuf> {
    steps(root, stage).into_iter().next_back().map(|(_, p)| p)
}

fn steps(root: &Path, stage: &str) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(root.join(stage))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(STATE_FILE).is_file().then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Removes all but the newest `keep_last` complete checkpoints of a stage, and what
/// interrupted writes left behind (hidden temporary directories).
pub fn prune(root: &Path, stage: &str, keep_last: usize) -> Result<()> {
    let all = steps(root, stage);
    for (_, path) in all.iter().take(all.len().saturating_sub(keep_last.max(1))) {
        std::fs::remove_dir_all(path).map_err(io_at(path))?;
    }
    let leftovers =
        std::fs::read_dir(root.join(stage)).into_iter().flatten().filter_map(|e| e.ok()).filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(".step-") && (name.contains(".tmp-") || name.contains(".old-"))
        });
    for entry in leftovers {
        std::fs::remove_dir_all(entry.path()).map_err(io_at(entry.path()))?;
    }
    Ok(())
}
