//! `davinci train RECIPE.toml`: prepares what is stale, then runs the recipe's stages in
//! order, each from the previous stage's final weights (or its own `init_from`), writing
//! checkpoints; started again, it resumes from the newest complete checkpoint.

mod setup;
mod stage;
pub mod weights;

use std::path::PathBuf;

use candle_core::Device;
use davinci_model::Config;

pub use setup::{plan_stages, prepare_stale, resolve_model, StagePlan};

use crate::checkpoint::{self, TrainerState};
use crate::error::{Result, TrainError};
use crate::metrics::MetricsLog;
use crate::optimizer::{AdamW, ParamState};
use crate::recipe::{changed_parts, Recipe};
use stage::{run_stage, StageEnd, StageRun};

/// How a run is carried out (as opposed to what it trains: the recipe).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub device: Device,
    /// Resume even though the recipe changed in a way that matters.
    pub force: bool,
    /// Stop (with a checkpoint) after this many optimizer steps of this invocation.
    pub stop_after: Option<u64>,
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, force: false, stop_after: None, progress: true }
    }
}

/// What a stage did in this invocation.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    pub name: String,
    pub steps_run: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    /// The stage's final checkpoint, once it is complete.
    pub final_checkpoint: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub stages: Vec<StageOutcome>,
    /// Where the run resumed from, if it did.
    pub resumed_from: Option<PathBuf>,
    /// Whether `stop_after` ended the run before the recipe's end.
    pub stopped_early: bool,
}

/// Where to begin: a checkpoint mid-stage, a finished stage's weights, or nothing.
struct Start {
    stage: usize,
    params: Option<Vec<ParamState>>,
    resume: Option<(AdamW, TrainerState)>,
    from: Option<PathBuf>,
}

/// Runs a recipe on one process (world size 1).
pub fn train(recipe: &Recipe, options: &TrainOptions) -> Result<RunSummary> {
    let model_spec = recipe.check_trainable(1)?;
    let tokenizer = davinci_data::tokenize::TextTokenizer::load(&recipe.data.tokenizer_source())?;
    prepare_stale(recipe, &tokenizer, options.progress)?;
    let (config, init_dir) = resolve_model(recipe, model_spec)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(TrainError::Invalid(format!(
            "{}: the tokenizer has {} tokens but the model's vocabulary only {}",
            recipe.path.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    let fingerprint = recipe.fingerprint(&config.to_json(), tokenizer.hash());
    let plans = plan_stages(recipe, &tokenizer)?;
    log_summary(recipe, &config, &plans);

    let start = find_start(recipe, &plans, &fingerprint, options.force)?;
    let mut metrics = MetricsLog::open(
        &recipe.output_dir,
        start
            .resume
            .as_ref()
            .map(|(_, s)| (s.stage_index, s.step))
            .or(start.from.as_ref().map(|_| (start.stage, 0))),
    )?;
    let mut summary =
        RunSummary { stages: Vec::new(), resumed_from: start.from.clone(), stopped_early: false };
    let mut carried = start.params;
    let mut resume = start.resume;
    let mut budget = options.stop_after;
    for (index, plan) in plans.into_iter().enumerate().skip(start.stage) {
        let (optimizer, state) = match resume.take() {
            Some(found) => found,
            None => {
                let params = match (&plan.init_from, carried.take(), &init_dir) {
                    (Some(dir), _, _) => weights::params_from_checkpoint(dir, &config)?,
                    (None, Some(params), _) => params,
                    (None, None, Some(dir)) => weights::params_from_checkpoint(dir, &config)?,
                    (None, None, None) => weights::params_from_model(&davinci_model::Qwen2::init(
                        config.clone(),
                        recipe.data.seed,
                        &Device::Cpu,
                    )?)?,
                };
                let state = TrainerState {
                    stage: plan.spec.name.clone(),
                    stage_index: index,
                    step: 0,
                    tokens_seen: 0,
                    loader: Default::default(),
                    recipe: fingerprint.clone(),
                    elapsed_seconds: 0.0,
                };
                (AdamW::new(plan.spec.optimizer, params), state)
            }
        };
        let run = StageRun {
            recipe,
            config: &config,
            plan,
            options,
            weights_dtype: model_spec.dtype.dtype(),
            save_dtype: model_spec.save_dtype.unwrap_or(model_spec.dtype).dtype(),
        };
        let (end, outcome) = run_stage(run, optimizer, state, &mut metrics, &mut budget)?;
        summary.stages.push(outcome);
        match end {
            StageEnd::Finished(params) => carried = Some(params),
            StageEnd::Stopped => {
                summary.stopped_early = true;
                break;
            }
        }
    }
    Ok(summary)
}

/// The newest complete checkpoint over all stages decides where to begin; a recipe whose
/// fingerprint differs from the checkpoint's is refused unless `force`.
fn find_start(
    recipe: &Recipe,
    plans: &[StagePlan],
    fingerprint: &std::collections::BTreeMap<String, String>,
    force: bool,
) -> Result<Start> {
    let found = plans
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, p)| checkpoint::latest(&recipe.output_dir, &p.spec.name).map(|dir| (i, dir)));
    let Some((index, dir)) = found else {
        return Ok(Start { stage: 0, params: None, resume: None, from: None });
    };
    let (_, optimizer, state) = checkpoint::load(&dir)?;
    let changed = changed_parts(&state.recipe, fingerprint);
    if !changed.is_empty() {
        let what = changed.join(", ");
        if !force {
            return Err(TrainError::Invalid(format!(
                "{}: the recipe changed since checkpoint {} was written ({what}); start in a new \
                 output_dir, or pass --force to resume anyway",
                recipe.path.display(),
                dir.display()
            )));
        }
        tracing::warn!("resuming from {} although the recipe changed ({what})", dir.display());
    }
    tracing::info!("resuming from {}", dir.display());
    if state.step >= plans[index].total_steps {
        // The stage is complete: the next one starts from its final weights.
        let params = optimizer.params.into_iter().map(|p| ParamState::new(&p.name, p.master)).collect();
        return Ok(Start { stage: index + 1, params: Some(params), resume: None, from: Some(dir) });
    }
    Ok(Start { stage: index, params: None, resume: Some((optimizer, state)), from: Some(dir) })
}

fn log_summary(recipe: &Recipe, config: &Config, plans: &[StagePlan]) {
    tracing::info!(
        "model: {:.3}B parameters ({} layers, hidden {}, vocab {}); checkpoints and metrics in {}",
        config.num_parameters() as f64 / 1e9,
        config.num_hidden_layers,
        config.hidden_size,
        config.vocab_size,
        recipe.output_dir.display()
    );
    for plan in plans {
        let s = &plan.spec;
        tracing::info!(
            "stage {}: {} steps of {} tokens ({} rows of {}, micro-batches of {}), {} epoch(s) of {} rows, lr {:.1e}",
            s.name,
            plan.total_steps,
            s.tokens_per_step,
            s.global_rows(),
            s.seq_len,
            s.micro_batch,
            format_epochs(plan.total_steps * s.global_rows() as u64, plan.rows_per_epoch),
            plan.rows_per_epoch,
            s.lr.peak
        );
    }
}

fn format_epochs(rows: u64, per_epoch: u64) -> String {
    format!("{:.2}", rows as f64 / per_epoch.max(1) as f64)
}
