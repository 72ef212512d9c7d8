//! The data section of a recipe file: the tokenizer, where shards go, and the datasets.
//! The trainer's recipe adds model and stages around it and reads this part as it is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_at, DataError, Result};
use crate::loader::LongDocuments;
use crate::prepare::DatasetSpec;

/// A dataset in a stage's mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureSpec {
    pub dataset: String,
    /// How many times an epoch visits each document (the paper upsamples environment
    /// trajectories 3x); fractions visit a random subset.
    #[serde(default = "one")]
    pub upsample: f64,
}

pub fn one() -> f64 {
    1.0
}

pub fn default_window() -> usize {
    8192
}

/// The data side of a training stage: what the loader needs. The trainer reads the rest
/// of a stage (schedule, steps, ...) and rejects unknown keys there.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StageData {
    pub name: String,
    pub seq_len: u32,
    pub mixture: Vec<MixtureSpec>,
    #[serde(default)]
    pub long_documents: LongDocuments,
    /// Pieces packed together (best-fit decreasing); larger windows pad less.
    #[serde(default = "default_window")]
    pub pack_window: usize,
}

/// What `davinci prepare RECIPE.toml` reads. Other top-level tables of a recipe (model,
/// stages) belong to the trainer and are not read here; within a dataset, an unknown key
/// is an error.
#[derive(Debug, Clone, Deserialize)]
pub struct DataRecipe {
    /// `tokenizer.json`, relative to the recipe's directory, or a Hub model name.
    pub tokenizer: PathBuf,
    /// Root of the prepared datasets, relative to the recipe's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub datasets: Vec<DatasetSpec>,
    #[serde(default)]
    pub stages: Vec<StageData>,
    #[serde(default)]
    pub seed: u64,
    /// The recipe's directory, against which relative paths resolve.
    #[serde(skip)]
    pub base: PathBuf,
}

pub fn default_data_dir() -> PathBuf {
    PathBuf::from("../checkpoints/data")
}

impl DataRecipe {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_at(path))?;
        let mut recipe: DataRecipe = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1).unwrap_or(0);
            DataError::Record { path: path.into(), line, message: e.message().to_string() }
        })?;
        recipe.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        recipe.check(path)?;
        Ok(recipe)
    }

    /// Dataset names are unique and every stage's mixture names a defined dataset.
    pub fn check(&self, path: &Path) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        for dataset in &self.datasets {
            if !names.insert(dataset.name.as_str()) {
                return Err(DataError::Invalid(format!(
                    "{}: dataset `{}` is defined twice",
                    path.display(),
                    dataset.name
                )));
            }
        }
        for stage in &self.stages {
            for entry in &stage.mixture {
                if !names.contains(entry.dataset.as_str()) {
                    return Err(DataError::Invalid(format!(
                        "{}: stage `{}` names dataset `{}`, which the recipe does not define",
                        path.display(),
                        stage.name,
                        entry.dataset
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn dataset(&self, name: &str) -> Option<&DatasetSpec> {
        self.datasets.iter().find(|d| d.name == name)
    }

    /// The tokenizer: a file relative to the recipe, or else the name as written (a Hub
    /// model name, for [`crate::tokenize::TextTokenizer::load`]).
    pub fn tokenizer_source(&self) -> String {
        let local = self.base.join(&self.tokenizer);
        if local.exists() { local } else { self.tokenizer.clone() }.to_string_lossy().into_owned()
    }

    pub fn output_dir(&self, dataset: &DatasetSpec) -> PathBuf {
        normalize(&self.base.join(&self.data_dir).join(&dataset.name))
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
