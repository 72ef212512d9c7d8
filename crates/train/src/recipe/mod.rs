//! Recipe files: one TOML file for a whole run — tokenizer, datasets, model, and the stages
//! in order, each with its data mixture and its optimisation settings. Every table rejects
//! unknown keys, so a typo is an error naming the key and its line. This module owns the
//! format; `davinci prepare`, `davinci data stats` and the trainer all read it from here.

mod check;
mod values;

use std::path::{Path, PathBuf};

use davinci_data::loader::{LoaderConfig, LongDocuments};
use davinci_data::prepare::DatasetSpec;
use davinci_data::rendered::END_OF_TEXT;
use davinci_data::tokenize::TextTokenizer;
use serde::{Deserialize, Serialize};

pub use check::changed_parts;
pub use values::{is_plain_name, MAX_SEQ_LEN};

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
    #[serde(alias = "float32")]
    F32,
    #[serde(alias = "bfloat16")]
    Bf16,
    #[serde(alias = "float16")]
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

/// A dataset in a stage's mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureSpec {
    pub dataset: String,
    /// How many times an epoch visits each document (the paper upsamples environment
    /// trajectories 3x); fractions visit a random subset.
    #[serde(default = "default_upsample")]
    pub upsample: f64,
}

fn default_upsample() -> f64 {
    1.0
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
    /// Pieces packed together (best-fit decreasing); larger windows pad less.
    #[serde(default = "default_pack_window")]
    pub pack_window: usize,
    /// Start from this checkpoint (directory or Hub name) instead of the previous stage.
    pub init_from: Option<String>,
    /// Tokens per optimizer step (a multiple of `seq_len`): the global batch.
    pub tokens_per_step: u64,
    /// Rows per forward/backward on one rank; gradient accumulation covers the rest.
    #[serde(default = "default_micro_batch")]
    pub micro_batch: usize,
    /// Ranks that share each packed row (context parallelism): consecutive ranks form a
    /// group, each holding a balanced share of the row's tokens. 1: every rank its own rows.
    #[serde(default = "default_context_parallel")]
    pub context_parallel: usize,
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

fn default_data_dir() -> PathBuf {
    PathBuf::from("../checkpoints/data")
}

fn default_pack_window() -> usize {
    8192
}

fn default_micro_batch() -> usize {
    1
}

fn default_context_parallel() -> usize {
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

    /// Data-parallel ranks in a world of `world`: one per context group.
    pub fn data_ranks(&self, world: usize) -> usize {
        world / self.context_parallel.max(1)
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
}

/// A parsed recipe. Relative paths resolve against the recipe's directory.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub path: PathBuf,
    /// The recipe's directory.
    pub base: PathBuf,
    /// `tokenizer.json`, relative to the recipe's directory, or a Hub model name.
    pub tokenizer: PathBuf,
    /// Root of the prepared datasets, relative to the recipe's directory.
    pub data_dir: PathBuf,
    pub datasets: Vec<DatasetSpec>,
    /// Seeds the fresh weights and every stage's shuffle.
    pub seed: u64,
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

    /// Parses `text` as if read from `path`, and checks that the datasets it names exist
    /// (what training needs beyond that is [`Recipe::check_trainable`]).
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
        let recipe = Self {
            path: path.into(),
            base,
            tokenizer: file.tokenizer,
            data_dir: file.data_dir,
            datasets: file.datasets,
            seed: file.seed,
            model: file.model,
            stages: file.stages,
            output_dir,
        };
        recipe.check_values(text)?;
        recipe.check_datasets()?;
        Ok(recipe)
    }

    pub fn dataset(&self, name: &str) -> Option<&DatasetSpec> {
        self.datasets.iter().find(|d| d.name == name)
    }

    /// Whether some stage's mixture reads the dataset (only those are prepared).
    pub fn uses_dataset(&self, name: &str) -> bool {
        self.stages.iter().any(|s| s.mixture.iter().any(|m| m.dataset == name))
    }

    /// The tokenizer: a file relative to the recipe, or else the name as written (a Hub
    /// model name, for [`TextTokenizer::load`]).
    pub fn tokenizer_source(&self) -> String {
        let local = self.base.join(&self.tokenizer);
        if local.exists() { local } else { self.tokenizer.clone() }.to_string_lossy().into_owned()
    }

    /// Where a dataset's shards are prepared.
    pub fn dataset_dir(&self, dataset: &DatasetSpec) -> PathBuf {
        normalize(&self.base.join(&self.data_dir).join(&dataset.name))
    }

    /// How the loader packs and labels a stage's rows: the one place the stage's settings
    /// become a [`LoaderConfig`], for the trainer and for `davinci data stats` alike.
    pub fn stage_loader(&self, stage: &StageSpec, tokenizer: &TextTokenizer) -> LoaderConfig {
        LoaderConfig {
            seq_len: stage.seq_len,
            global_rows: stage.global_rows(),
            window: stage.pack_window,
            long_documents: stage.long_documents,
            seed: self.seed,
            pad_id: tokenizer.special_id(END_OF_TEXT).unwrap_or(0),
            loss_mask: stage.loss == LossMode::AssistantOnly,
        }
    }
}

/// Removes `.` and folds `dir/..` without touching the filesystem, for readable paths.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
