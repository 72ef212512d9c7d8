//! Recipe files: one TOML file for a whole run — tokenizer, datasets, model, and the stages
//! in order, each with its data mixture and its optimisation settings. Every table rejects
//! unknown keys, so a typo is an error naming the key and its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use davinci_data::loader::LongDocuments;
use davinci_data::prepare::DatasetSpec;
use davinci_data::recipe::{default_data_dir, default_window, normalize, DataRecipe, MixtureSpec, StageData};
use davinci_data::render::{LossScope, Template};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};
use crate::optimizer::AdamWConfig;
use crate::schedule::{Decay, Schedule};

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    tokenizer: PathBuf,
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    output_dir: Option<PathBuf>,
    #[serde(default)]
    seed: u64,
    model: Option<ModelSpec>,
    #[serde(default)]
    datasets: Vec<DatasetSpec>,
    #[serde(default)]
    stages: Vec<StageSpec>,
}

/// Which model to train: exactly one of a preset, a `config.json`, or a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// A preset name (`tiny`, `qwen2.5-32b`, ...), initialised fresh from the seed.
    pub preset: Option<String>,
    /// A Hugging Face `config.json`, relative to the recipe, initialised fresh.
    pub config: Option<PathBuf>,
    /// A Hugging Face checkpoint directory or Hub name to start from.
    pub init_from: Option<String>,
    /// Compute dtype of the weights and activations; masters and moments are always f32.
    #[serde(default)]
    pub dtype: DTypeName,
    /// Dtype of the weights in checkpoints (defaults to `dtype`).
    pub save_dtype: Option<DTypeName>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DTypeName {
    #[default]
    F32,
    Bf16,
    F16,
}

impl DTypeName {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::Bf16 => candle_core::DType::BF16,
            Self::F16 => candle_core::DType::F16,
        }
    }
}

/// Which tokens a stage trains on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossMode {
    /// Every next token of every document (mid-training).
    #[default]
    All,
    /// Only tokens the datasets mark as the assistant's (SFT).
    AssistantOnly,
}

/// The learning-rate schedule of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSpec {
    pub peak: f64,
    #[serde(default)]
    pub min: f64,
    /// Linear warmup, as a fraction of the stage's steps (the paper: 0.05, SFT 0.1).
    #[serde(default)]
    pub warmup: f64,
    #[serde(default)]
    pub decay: DecayName,
    /// With `decay = "wsd"`: the fraction of steps of the final linear decay.
    #[serde(default = "default_decay_fraction")]
    pub decay_fraction: f64,
}

fn default_decay_fraction() -> f64 {
    0.2
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecayName {
    #[default]
    Cosine,
    Wsd,
}

/// One stage: its data (what the loader reads) and how it is optimised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    pub seq_len: u32,
    pub mixture: Vec<MixtureSpec>,
    #[serde(default)]
    pub long_documents: LongDocuments,
    #[serde(default = "default_window")]
    pub pack_window: usize,
    /// Start from this checkpoint (directory or Hub name) instead of the previous stage.
    pub init_from: Option<String>,
    /// Tokens per optimizer step (a multiple of `seq_len`): the global batch.
    pub tokens_per_step: u64,
    /// Rows per forward/backward on one rank; gradient accumulation covers the rest.
    #[serde(default = "one")]
    pub micro_batch: usize,
    /// Length of the stage: optimizer steps, or passes over its mixture.
    pub steps: Option<u64>,
    pub epochs: Option<f64>,
    pub lr: LrSpec,
    #[serde(default)]
    pub optimizer: AdamWConfig,
    /// Global gradient norm above which gradients are scaled down (0: no clipping).
    #[serde(default = "default_clip")]
    pub clip_grad_norm: f64,
    #[serde(default)]
    pub loss: LossMode,
    /// Steps between checkpoints (the stage's last step always writes one).
    pub checkpoint_every: Option<u64>,
    /// Complete checkpoints kept per stage; older ones are removed after a new one is written.
    #[serde(default = "default_keep")]
    pub keep_last: usize,
}

fn one() -> usize {
    1
}

fn default_clip() -> f64 {
    1.0
}

fn default_keep() -> usize {
    2
}

impl StageSpec {
    /// Rows of `seq_len` tokens per optimizer step.
    pub fn global_rows(&self) -> usize {
        (self.tokens_per_step / self.seq_len.max(1) as u64) as usize
    }

    /// The schedule over `total_steps` optimizer steps.
    pub fn schedule(&self, total_steps: u64) -> Schedule {
        let warmup_steps = (self.lr.warmup * total_steps as f64).round() as u64;
        Schedule {
            peak_lr: self.lr.peak,
            min_lr: self.lr.min,
            warmup_steps: warmup_steps.min(total_steps),
            total_steps,
            decay: match self.lr.decay {
                DecayName::Cosine => Decay::Cosine,
                DecayName::Wsd => Decay::WarmupStableDecay { fraction: self.lr.decay_fraction },
            },
        }
    }

    fn data(&self) -> StageData {
        StageData {
            name: self.name.clone(),
            seq_len: self.seq_len,
            mixture: self.mixture.clone(),
            long_documents: self.long_documents,
            pack_window: self.pack_window,
        }
    }
}

/// A parsed and checked recipe. Relative paths resolve against the recipe's directory.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub path: PathBuf,
    /// The data section, as `davinci prepare` reads it.
    pub data: DataRecipe,
    pub model: Option<ModelSpec>,
    pub stages: Vec<StageSpec>,
    /// Where checkpoints and metrics go.
    pub output_dir: PathBuf,
}

impl Recipe {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(davinci_model::error::io_at(path))?;
        Self::parse(&text, path)
    }

    /// Parses `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file: RecipeFile = toml::from_str(text).map_err(|e| TrainError::Recipe {
            path: path.into(),
            line: e.span().map(|s| text[..s.start].matches('\n').count() + 1).unwrap_or(0),
            message: e.message().to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        let output_dir = normalize(
            &base.join(file.output_dir.clone().unwrap_or_else(|| PathBuf::from("../checkpoints").join(stem))),
        );
        let data = DataRecipe {
            tokenizer: file.tokenizer,
            data_dir: file.data_dir,
            datasets: file.datasets,
            stages: file.stages.iter().map(StageSpec::data).collect(),
            seed: file.seed,
            base,
        };
        data.check(path)?;
        Ok(Self { path: path.into(), data, model: file.model, stages: file.stages, output_dir })
    }

    fn invalid(&self, message: String) -> TrainError {
        TrainError::Invalid(format!("{}: {message}", self.path.display()))
    }

    /// Checks what training needs beyond parsing: a model, stages with a length, batch
    /// sizes that divide, a schedule that makes sense.
    pub fn check_trainable(&self, world: usize) -> Result<&ModelSpec> {
        let model =
            self.model.as_ref().ok_or_else(|| self.invalid("the recipe has no [model] table".into()))?;
        let sources = [model.preset.is_some(), model.config.is_some(), model.init_from.is_some()];
        if sources.iter().filter(|&&s| s).count() != 1 {
            return Err(self.invalid("[model] needs exactly one of `preset`, `config` or `init_from`".into()));
        }
        if self.stages.is_empty() {
            return Err(self.invalid("the recipe has no [[stages]]".into()));
        }
        let mut names = std::collections::HashSet::new();
        for stage in &self.stages {
            let bad = |m: String| self.invalid(format!("stage `{}`: {m}", stage.name));
            if !names.insert(&stage.name) {
                return Err(bad("the name is used twice".into()));
            }
            if stage.seq_len == 0
                || stage.tokens_per_step == 0
                || !stage.tokens_per_step.is_multiple_of(stage.seq_len as u64)
            {
                return Err(bad(format!(
                    "tokens_per_step ({}) must be a positive multiple of seq_len ({})",
                    stage.tokens_per_step, stage.seq_len
                )));
            }
            let rows = stage.global_rows();
            if !rows.is_multiple_of(world)
                || stage.micro_batch == 0
                || !(rows / world).is_multiple_of(stage.micro_batch)
            {
                return Err(bad(format!(
                    "{rows} rows per step must split evenly over {world} rank(s) in micro-batches of {}",
                    stage.micro_batch
                )));
            }
            match (stage.steps, stage.epochs) {
                (Some(0), _) => return Err(bad("steps must be positive".into())),
                (None, Some(e)) if !(e.is_finite() && e > 0.0) => {
                    return Err(bad("epochs must be positive".into()))
                }
                (Some(_), None) | (None, Some(_)) => {}
                _ => return Err(bad("give exactly one of `steps` or `epochs`".into())),
            }
            let lr = &stage.lr;
            if !(lr.peak > 0.0 && lr.min >= 0.0 && lr.min <= lr.peak && (0.0..1.0).contains(&lr.warmup)) {
                return Err(bad("lr needs peak > 0, 0 <= min <= peak and 0 <= warmup < 1".into()));
            }
            if stage.loss == LossMode::AssistantOnly {
                for entry in &stage.mixture {
                    let marked = self.data.dataset(&entry.dataset).is_some_and(|d| {
                        d.template == Template::Chatml && d.chatml.loss == LossScope::AssistantOnly
                    });
                    if !marked {
                        return Err(bad(format!(
                            "loss = \"assistant-only\" needs datasets rendered with template \"chatml\" and \
                             chatml.loss = \"assistant-only\"; `{}` is not",
                            entry.dataset
                        )));
                    }
                }
            }
        }
        Ok(model)
    }

    /// What must not change across a resume, part by part (short hashes), so a refusal can
    /// say what changed. Learning rates, lengths and checkpoint settings may change.
    pub fn fingerprint(&self, model_config_json: &str, tokenizer_sha256: &str) -> BTreeMap<String, String> {
        let mut parts = BTreeMap::new();
        let init_from = self.model.as_ref().and_then(|m| m.init_from.clone());
        parts.insert("model".into(), short_hash(&(model_config_json, init_from)));
        parts.insert("tokenizer".into(), tokenizer_sha256.chars().take(16).collect());
        parts.insert("seed".into(), self.data.seed.to_string());
        let order: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
        parts.insert("stage order".into(), order.join(","));
        for stage in &self.stages {
            let shape = (
                stage.seq_len,
                &stage.mixture,
                stage.long_documents,
                stage.pack_window,
                stage.tokens_per_step,
                stage.loss,
                &stage.init_from,
            );
            parts.insert(format!("stage `{}` data", stage.name), short_hash(&shape));
        }
        for dataset in &self.data.datasets {
            let used = self.stages.iter().any(|s| s.mixture.iter().any(|m| m.dataset == dataset.name));
            if used {
                parts.insert(
                    format!("dataset `{}`", dataset.name),
                    short_hash(&(dataset.settings_hash(), &dataset.sources)),
                );
            }
        }
        parts
    }
}

fn short_hash<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_string()
}

/// The parts that differ between two fingerprints, by name.
pub fn changed_parts(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = before.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| before.get(*k) != now.get(*k)).cloned().collect()
}
