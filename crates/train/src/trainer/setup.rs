//! Before the first step: stale datasets prepared, the model's shape resolved, each stage's
//! datasets opened and its length in steps worked out.

use std::path::PathBuf;

use davinci_data::dataset::Dataset;
use davinci_data::fresh::stale_reason;
use davinci_data::loader::{Loader, LoaderConfig, LoaderState, MixtureEntry};
use davinci_data::prepare::{prepare_dataset, PrepareOptions};
use davinci_data::tokenize::TextTokenizer;
use davinci_model::{resolve_model_dir, Config};

use crate::error::{Result, TrainError};
use crate::recipe::{LossMode, ModelSpec, Recipe, StageSpec};

/// A stage ready to run.
pub struct StagePlan {
    pub spec: StageSpec,
    pub entries: Vec<MixtureEntry>,
    pub loader: LoaderConfig,
    pub total_steps: u64,
    pub rows_per_epoch: u64,
    /// The stage's own starting checkpoint, resolved.
    pub init_from: Option<PathBuf>,
}

/// Prepares every dataset a stage uses whose shards are missing or stale.
pub fn prepare_stale(recipe: &Recipe, tokenizer: &TextTokenizer, progress: bool) -> Result<()> {
    let data = &recipe.data;
    for spec in &data.datasets {
        if !recipe.stages.iter().any(|s| s.mixture.iter().any(|m| m.dataset == spec.name)) {
            continue;
        }
        let out = data.output_dir(spec);
        if let Some(reason) = stale_reason(spec, &data.base, tokenizer.hash(), &out)? {
            tracing::info!("preparing dataset `{}` into {} ({reason})", spec.name, out.display());
            let options = PrepareOptions { progress, ..PrepareOptions::default() };
            let (_, report) = prepare_dataset(spec, &data.base, tokenizer, &out, &options)?;
            tracing::info!(
                "dataset `{}`: {} of {} records kept, {} tokens",
                spec.name,
                report.kept,
                report.records,
                report.tokens
            );
        }
    }
    Ok(())
}

/// A checkpoint named in a recipe: a directory relative to the recipe, else a Hub name.
pub fn resolve_checkpoint(recipe: &Recipe, name: &str) -> Result<PathBuf> {
    let local = recipe.data.base.join(name);
    if local.is_dir() {
        return Ok(local);
    }
    Ok(resolve_model_dir(name)?)
}

/// The model's config, and the checkpoint to start from when the recipe names one.
pub fn resolve_model(recipe: &Recipe, spec: &ModelSpec) -> Result<(Config, Option<PathBuf>)> {
    if let Some(name) = &spec.preset {
        return Ok((Config::preset(name)?, None));
    }
    if let Some(path) = &spec.config {
        return Ok((Config::from_file(&recipe.data.base.join(path))?, None));
    }
    let name = spec.init_from.as_deref().unwrap_or_default();
    let dir = resolve_checkpoint(recipe, name)?;
    Ok((Config::from_file(&dir.join("config.json"))?, Some(dir)))
}

/// Opens each stage's datasets and works out its length in optimizer steps.
pub fn plan_stages(recipe: &Recipe, tokenizer: &TextTokenizer) -> Result<Vec<StagePlan>> {
    let pad_id = tokenizer.special_id(davinci_data::sample::END_OF_TEXT).unwrap_or(0);
    let mut plans = Vec::with_capacity(recipe.stages.len());
    for spec in &recipe.stages {
        let mut entries = Vec::with_capacity(spec.mixture.len());
        for item in &spec.mixture {
            let dataset = recipe
                .data
                .dataset(&item.dataset)
                .ok_or_else(|| TrainError::Invalid(format!("no dataset `{}`", item.dataset)))?;
            let dataset = Dataset::open(&recipe.data.output_dir(dataset))?;
            if dataset.manifest.tokenizer_sha256 != tokenizer.hash() {
                return Err(TrainError::Invalid(format!(
                    "{}: tokenized with another tokenizer than the recipe's",
                    dataset.dir.display()
                )));
            }
            entries.push(MixtureEntry { dataset, upsample: item.upsample });
        }
        let loader = LoaderConfig {
            seq_len: spec.seq_len,
            global_rows: spec.global_rows(),
            window: spec.pack_window,
            long_documents: spec.long_documents,
            seed: recipe.data.seed,
            pad_id,
            loss_mask: spec.loss == LossMode::AssistantOnly,
        };
        let probe = Loader::new(entries, loader.clone(), LoaderState::default())?;
        let rows_per_epoch = probe.epoch_stats(0).rows;
        let entries = probe.into_entries();
        let total_steps = match (spec.steps, spec.epochs) {
            (Some(steps), _) => steps,
            (None, Some(epochs)) => {
                ((epochs * rows_per_epoch as f64) / spec.global_rows() as f64).ceil().max(1.0) as u64
            }
            (None, None) => unreachable!("check_trainable requires steps or epochs"),
        };
        let init_from = spec.init_from.as_deref().map(|name| resolve_checkpoint(recipe, name)).transpose()?;
        plans.push(StagePlan { spec: spec.clone(), entries, loader, total_steps, rows_per_epoch, init_from });
    }
    Ok(plans)
}
