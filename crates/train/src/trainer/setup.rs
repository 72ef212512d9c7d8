//! Before the first step: stale datasets prepared, the model's shape resolved, each stage's
//! datasets opened and its length in steps worked out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use davinci_data::dataset::Dataset;
use davinci_data::loader::{Loader, LoaderConfig, LoaderState, MixtureEntry};
use davinci_data::prepare::{prepare_dataset, PrepareOptions};
use davinci_data::shard::MANIFEST;
use davinci_data::staleness::{source_digests, stale_reason};
use davinci_data::tokenize::TextTokenizer;
use davinci_model::{resolve_model_dir, Config};

use crate::error::{Result, TrainError};
use crate::recipe::{ModelSpec, Recipe, StageSpec};

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

/// The size and SHA-256 of the source files of every dataset a stage uses, by dataset.
pub type SourceDigests = BTreeMap<String, Vec<(u64, String)>>;

/// Hashes the sources of every dataset a stage uses (for the fingerprint and staleness).
pub fn hash_sources(recipe: &Recipe) -> Result<SourceDigests> {
    let mut digests = SourceDigests::new();
    for spec in recipe.datasets.iter().filter(|d| recipe.uses_dataset(&d.name)) {
        digests.insert(spec.name.clone(), source_digests(spec, &recipe.base)?);
    }
    Ok(digests)
}

/// Prepares every dataset a stage uses whose shards are missing or stale (`digests` from
/// [`hash_sources`]).
pub fn prepare_stale(
    recipe: &Recipe,
    tokenizer: &TextTokenizer,
    digests: &SourceDigests,
    progress: bool,
) -> Result<()> {
    for spec in recipe.datasets.iter().filter(|d| recipe.uses_dataset(&d.name)) {
        let out = recipe.dataset_dir(spec);
        let sources = digests.get(&spec.name).map(Vec::as_slice).unwrap_or_default();
        if let Some(reason) = stale_reason(spec, &recipe.base, tokenizer.hash(), &out, sources)? {
            tracing::info!("preparing dataset `{}` into {} ({reason})", spec.name, out.display());
            let options = PrepareOptions { progress, ..PrepareOptions::default() };
            let (_, report) = prepare_dataset(spec, &recipe.base, tokenizer, &out, &options)?;
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
    let local = recipe.base.join(name);
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
        return Ok((Config::from_file(&recipe.base.join(path))?, None));
    }
    let name = spec.init_from.as_deref().unwrap_or_default();
    let dir = resolve_checkpoint(recipe, name)?;
    Ok((Config::from_file(&dir.join("config.json"))?, Some(dir)))
}

/// Opens the prepared datasets of a stage's mixture, refusing shards made with another
/// tokenizer than the recipe's.
pub fn open_mixture(
    recipe: &Recipe,
    stage: &StageSpec,
    tokenizer: &TextTokenizer,
) -> Result<Vec<MixtureEntry>> {
    let mut entries = Vec::with_capacity(stage.mixture.len());
    for item in &stage.mixture {
        let spec = recipe
            .dataset(&item.dataset)
            .ok_or_else(|| TrainError::Invalid(format!("no dataset `{}`", item.dataset)))?;
        let dir = recipe.dataset_dir(spec);
        if !dir.join(MANIFEST).exists() {
            return Err(TrainError::Invalid(format!(
                "dataset `{}` is not prepared in {} (run `davinci data prepare {}`)",
                item.dataset,
                dir.display(),
                recipe.path.display()
            )));
        }
        let dataset = Dataset::open(&dir)?;
        if dataset.manifest.tokenizer_sha256 != tokenizer.hash() {
            return Err(TrainError::Invalid(format!(
                "{}: tokenized with another tokenizer than the recipe's",
                dataset.dir.display()
            )));
        }
        entries.push(MixtureEntry { dataset, upsample: item.upsample });
    }
    Ok(entries)
}

/// Opens each stage's datasets and works out its length in optimizer steps.
pub fn plan_stages(recipe: &Recipe, tokenizer: &TextTokenizer) -> Result<Vec<StagePlan>> {
    let mut plans = Vec::with_capacity(recipe.stages.len());
    for spec in &recipe.stages {
        let entries = open_mixture(recipe, spec, tokenizer)?;
        let loader = recipe.stage_loader(spec, tokenizer);
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
