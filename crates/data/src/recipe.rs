//! The data section of a recipe file: the tokenizer, where shards go, and the datasets.
//! The trainer's recipe adds model and stages around it and reads this part as it is.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{io_at, DataError, Result};
use crate::prepare::DatasetSpec;

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
    /// The recipe's directory, against which relative paths resolve.
    #[serde(skip)]
    pub base: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("../checkpoints/data")
}

impl DataRecipe {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_at(path))?;
        let mut recipe: DataRecipe = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1)).unwrap_or(0);
            DataError::Record { path: path.into(), line, message: e.message().to_string() }
        })?;
        recipe.base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut names = std::collections::HashSet::new();
        for dataset in &recipe.datasets {
            if !names.insert(dataset.name.as_str()) {
                return Err(DataError::Invalid(format!(
                    "{}: dataset `{}` is defined twice",
                    path.display(),
                    dataset.name
                )));
            }
        }
        Ok(recipe)
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
fn normalize(path: &Path) -> PathBuf {
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
