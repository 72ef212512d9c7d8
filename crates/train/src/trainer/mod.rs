//! `davinci train RECIPE.toml`: prepares what is stale, then runs the recipe's stages in
//! order, each from the previous stage's final weights (or its own `init_from`), writing
//! checkpoints; started again, it resumes from the newest complete checkpoint.

mod gate;
mod setup;
mod stage;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::Device;

use davinci_dist::{Collective, Local};
use davinci_model::Config;
use sha2::{Digest, Sha256};

pub use setup::{
    hash_sources, open_mixture, plan_stages, prepare_stale, resolve_model, SourceDigests, StagePlan,
};

use crate::checkpoint::{self, TrainerState};
use crate::error::{Result, TrainError};
use crate::human;
use crate::metrics::MetricsLog;
use crate::optimizer::{AdamW, ParamState};
use crate::recipe::Recipe;
use crate::sharded::{fresh_slices, owned_range, ShardedModel};
use davinci_model::checkpoint::load_slices;
use stage::{run_stage, StageEnd, StageRun};

/// How a run is carried out (as opposed to what it trains: the recipe).
#[derive(Clone)]
pub struct TrainOptions {
    pub device: Device,
    /// The ranks of the job ([`Local`] alone); each holds 1/world of the model (FSDP).
    pub collective: Arc<dyn Collective>,
    /// Resume even though the recipe changed in a way that matters.
    pub force: bool,
    /// Stop (with a checkpoint) after this many optimizer steps of this invocation.
    pub stop_after: Option<u64>,
    pub progress: bool,
    /// Set (to the signal's number) by a signal handler to stop gracefully: the ranks agree
    /// at the next step's collective, write a checkpoint and return. 0: keep going.
    pub stop_signal: Arc<AtomicUsize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            collective: Arc::new(Local),
            force: false,
            stop_after: None,
            progress: true,
            stop_signal: Arc::new(AtomicUsize::new(0)),
        }
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
    /// Whether `stop_after` or a signal ended the run before the recipe's end.
    pub stopped_early: bool,
    /// The signal that stopped the run (after a checkpoint), if one did.
    pub stopped_by_signal: Option<usize>,
}

/// A stage's starting weights: this rank's slices of each parameter (unpadded), or its
/// shards (padded, in the optimizer's layout).
enum Weights {
    Owned(Vec<(String, Vec<f32>)>),
    Shards(Vec<ParamState>),
}

/// Where to begin: a checkpoint mid-stage, a finished stage's weights, or nothing.
struct Start {
    stage: usize,
    params: Option<Weights>,
    resume: Option<(AdamW, TrainerState)>,
    from: Option<PathBuf>,
}

/// A short hash of what every rank of a job must agree on (the recipe's fingerprint),
/// for the rendezvous.
pub fn job_fingerprint(recipe: &Recipe) -> Result<String> {
    let model_spec = recipe.check_settings()?;
    let tokenizer = davinci_data::tokenize::TextTokenizer::load(&recipe.tokenizer_source())?;
    let (config, _) = resolve_model(recipe, model_spec)?;
    let parts = recipe.fingerprint(&config.to_json(), tokenizer.hash(), &SourceDigests::new())?;
    let text = serde_json::to_string(&parts).unwrap_or_default();
    Ok(hex::encode(Sha256::digest(text.as_bytes()))[..16].to_string())
}

/// Runs a recipe on this rank of `options.collective`; every rank calls it.
pub fn train(recipe: &Recipe, options: &TrainOptions) -> Result<RunSummary> {
    let collective = options.collective.clone();
    let (rank, world) = (collective.rank(), collective.world());
    let model_spec = recipe.check_trainable(world)?;
    let tokenizer = Arc::new(davinci_data::tokenize::TextTokenizer::load(&recipe.tokenizer_source())?);
    let (config, init_dir) = resolve_model(recipe, model_spec)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(TrainError::Invalid(format!(
            "{}: the tokenizer has {} tokens but the model's vocabulary only {}",
            recipe.path.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        )));
    }
    // On a GPU, a stage the planner says will not fit stops here, before any data is read.
    if let Some(gpu) = crate::throughput::device_gpu(&options.device) {
        let cluster = crate::plan::Cluster { gpu, gpus: world, gpus_per_node: 8 };
        let bytes = model_spec.dtype.dtype().size_in_bytes();
        let plans: Vec<_> = recipe
            .stages
            .iter()
            .map(|stage| crate::plan::plan_stage(&config, stage, &cluster, bytes))
            .collect();
        crate::plan::refuse_unless_fits(&plans, options.force)?;
    }
    // Rank 0 locks the output directory, checks that a resume sees the same recipe and
    // data, and prepares what is stale (the data directory is shared); the others wait.
    let gate = match gate::pass(recipe, &tokenizer, &config.to_json(), options)? {
        gate::Opened::Ready(gate) => gate,
        gate::Opened::Stopped(signal) => {
            return Ok(RunSummary {
                stages: Vec::new(),
                resumed_from: None,
                stopped_early: true,
                stopped_by_signal: Some(signal),
            })
        }
    };
    let fingerprint = gate.fingerprint.clone();
    let plans = plan_stages(recipe, &tokenizer)?;
    if rank == 0 {
        log_summary(recipe, &config, &plans, world);
    }

    let start = find_start(recipe, &plans, &fingerprint, options.force, rank, world)?;
    let resume_at = start
        .resume
        .as_ref()
        .map(|(_, s)| (s.stage_index, s.step))
        .or(start.from.as_ref().map(|_| (start.stage, 0)));
    let mut metrics = if rank == 0 { Some(MetricsLog::open(&recipe.output_dir, resume_at)?) } else { None };
    let mut summary = RunSummary {
        stages: Vec::new(),
        resumed_from: start.from.clone(),
        stopped_early: false,
        stopped_by_signal: None,
    };
    let mut carried = start.params;
    let mut resume = start.resume;
    let mut budget = options.stop_after;
    let dtype = model_spec.dtype.dtype();
    // Tokens of the stages after each one, for the recipe's ETA.
    let tokens_after: Vec<u64> = (0..plans.len())
        .map(|i| plans[i + 1..].iter().map(|p| p.total_steps * p.spec.tokens_per_step).sum())
        .collect();
    for (index, plan) in plans.into_iter().enumerate().skip(start.stage) {
        // A signal that came between stages (or before the first): the ranks agree on it
        // here, since no step's collective will carry it.
        if let Some(signal) = agreed_stop(options)? {
            summary.stopped_early = true;
            summary.stopped_by_signal = Some(signal);
            break;
        }
        let (model, state) = match resume.take() {
            Some((optimizer, state)) => (
                ShardedModel::from_shards(&config, optimizer, collective.clone(), dtype, &options.device)?,
                state,
            ),
            None => {
                let from_checkpoint = |dir: &PathBuf| -> Result<Weights> {
                    verify_share(dir, rank, world)?;
                    Ok(Weights::Owned(load_slices(dir, &config, owned_range(world, rank))?))
                };
                let weights = match (&plan.init_from, carried.take(), &init_dir) {
                    (Some(dir), _, _) => from_checkpoint(dir)?,
                    (None, Some(weights), _) => weights,
                    (None, None, Some(dir)) => from_checkpoint(dir)?,
                    (None, None, None) => Weights::Owned(fresh_slices(&config, recipe.seed, world, rank)),
                };
                let adam = plan.spec.optimizer;
                let model = match weights {
                    Weights::Owned(owned) => ShardedModel::from_owned(
                        &config,
                        owned,
                        adam,
                        collective.clone(),
                        dtype,
                        &options.device,
                    )?,
                    Weights::Shards(shards) => ShardedModel::from_shards(
                        &config,
                        AdamW::new(adam, shards),
                        collective.clone(),
                        dtype,
                        &options.device,
                    )?,
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
                (model, state)
            }
        };
        let run = StageRun {
            recipe,
            config: &config,
            plan,
            options,
            save_dtype: model_spec.save_dtype.unwrap_or(model_spec.dtype).dtype(),
            later_tokens: tokens_after[index],
        };
        let (end, outcome) = run_stage(run, model, state, metrics.as_mut(), &mut budget)?;
        summary.stages.push(outcome);
        match end {
            StageEnd::Finished(shards) => carried = Some(Weights::Shards(shards)),
            StageEnd::Stopped { signal } => {
                summary.stopped_early = true;
                summary.stopped_by_signal = signal;
                break;
            }
        }
    }
    drop(gate);
    Ok(summary)
}

/// Verifies this rank's share of a checkpoint's listed files against its checksums (file
/// `i` of the sorted list on rank `i mod world`), before every rank reads its slices of
/// all of them: each file is hashed once in the job, not once per rank.
fn verify_share(dir: &std::path::Path, rank: usize, world: usize) -> Result<()> {
    use davinci_model::checkpoint::checksums::{read_checksums, verify_file};
    if let Some(sums) = read_checksums(dir)? {
        for name in sums.keys().skip(rank).step_by(world) {
            verify_file(dir, &sums, name)?;
        }
    }
    Ok(())
}

/// Whether any rank has been asked to stop, agreed over the ranks: the signal (this rank's,
/// or SIGTERM's number when only another rank got one).
fn agreed_stop(options: &TrainOptions) -> Result<Option<usize>> {
    let vote = StopVote::cast(options);
    let mut votes = [vote.ballot()];
    options.collective.all_reduce(&mut votes)?;
    Ok(vote.outcome(votes[0]))
}

/// This rank's say in whether the ranks stop: a summand for an all-reduce (the step's own,
/// or [`agreed_stop`]'s), and what the sum means.
struct StopVote {
    /// The signal this rank received, 0 for none.
    mine: usize,
}

impl StopVote {
    /// SIGTERM's number: what a rank reports that stops only because another got a signal.
    const FOR_ANOTHER_RANK: usize = 15;

    fn cast(options: &TrainOptions) -> Self {
        Self { mine: options.stop_signal.load(Ordering::SeqCst) }
    }

    fn ballot(&self) -> f64 {
        (self.mine != 0) as u8 as f64
    }

    /// The signal to stop for, given the sum of every rank's ballot.
    fn outcome(&self, votes: f64) -> Option<usize> {
        (votes > 0.0).then_some(if self.mine != 0 { self.mine } else { Self::FOR_ANOTHER_RANK })
    }
}

/// The newest complete checkpoint over all stages decides where to begin; a recipe whose
/// fingerprint differs from the checkpoint's is refused unless `force`.
fn find_start(
    recipe: &Recipe,
    plans: &[StagePlan],
    fingerprint: &std::collections::BTreeMap<String, String>,
    force: bool,
    rank: usize,
    world: usize,
) -> Result<Start> {
    let found = plans
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, p)| checkpoint::latest(&recipe.output_dir, &p.spec.name).map(|dir| (i, dir)));
    let Some((index, dir)) = found else {
        return Ok(Start { stage: 0, params: None, resume: None, from: None });
    };
    let (_, optimizer, state) = checkpoint::load(&dir, rank, world)?;
    // Rank 0 has warned already at the gate, where a forced resume is decided.
    gate::check_unchanged(recipe, &dir, &state, fingerprint, force, false)?;
    if rank == 0 {
        tracing::info!("resuming from {}", dir.display());
    }
    if state.step >= plans[index].total_steps {
        // The stage is complete: the next one starts from its final weights.
        let shards = optimizer.params.into_iter().map(|p| ParamState::new(&p.name, p.master)).collect();
        return Ok(Start {
            stage: index + 1,
            params: Some(Weights::Shards(shards)),
            resume: None,
            from: Some(dir),
        });
    }
    Ok(Start { stage: index, params: None, resume: Some((optimizer, state)), from: Some(dir) })
}

fn log_summary(recipe: &Recipe, config: &Config, plans: &[StagePlan], world: usize) {
    tracing::info!(
        "model: {} parameters ({} layers, hidden {}, vocab {}), sharded over {world} rank(s); checkpoints and metrics in {}",
        human::count(config.num_parameters() as u64),
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
