//! One stage: global batches from the loader (prefetched on a thread), gradient
//! accumulation over micro-batches, clipping, AdamW, metrics, and checkpoints every
//! `checkpoint_every` steps and at the end.

use std::time::Instant;

use candle_core::DType;
use davinci_data::loader::{Loader, Prefetcher, IGNORE};
use davinci_model::Config;

use super::{StageOutcome, StagePlan, StopVote, TrainOptions};
use crate::checkpoint::{self, TrainerState};
use crate::context::ContextGroup;
use crate::error::{Result, TrainError};
use crate::metrics::{MetricsLog, StageProgress, StepMetrics};
use crate::optimizer::ParamState;
use crate::recipe::Recipe;
use crate::sharded::ShardedModel;
use crate::throughput;
use davinci_model::layerwise::loss_and_grads;

pub struct StageRun<'a> {
    pub recipe: &'a Recipe,
    pub config: &'a Config,
    pub plan: StagePlan,
    pub options: &'a TrainOptions,
    pub save_dtype: DType,
    /// Tokens of the recipe's stages after this one, for the whole recipe's ETA.
    pub later_tokens: u64,
}

pub enum StageEnd {
    /// The stage ran to its end; these are this rank's shards of its final weights, with
    /// fresh moments.
    Finished(Vec<ParamState>),
    /// `stop_after` ran out first, or a signal came (its number): a checkpoint was written.
    Stopped { signal: Option<usize> },
}

/// Runs a stage from `state` to its end, or until `budget` steps have been taken.
pub fn run_stage(
    run: StageRun,
    mut model: ShardedModel,
    mut state: TrainerState,
    mut metrics: Option<&mut MetricsLog>,
    budget: &mut Option<u64>,
) -> Result<(StageEnd, StageOutcome)> {
    let StageRun { recipe, config, plan, options, save_dtype, later_tokens } = run;
    let collective = options.collective.clone();
    let (rank, world) = (collective.rank(), collective.world());
    let spec = &plan.spec;
    let total = plan.total_steps;
    let schedule = spec.schedule(total);
    // Each context group shares its rows; the loader deals rows to the groups.
    let group = ContextGroup::new(&collective, spec.context_parallel)?;
    let micro_batches = spec.global_rows() / group.data_ranks / spec.micro_batch;
    // Batches are packed on a thread of their own, two ahead, while the step computes.
    let loader = Loader::new(plan.entries, plan.loader, state.loader)?;
    let batches = Prefetcher::spawn(loader, group.data_rank, group.data_ranks, 2);
    let peak = throughput::peak_tflops(&options.device, model.dtype());
    if let (Err(why), 0) = (&peak, rank) {
        tracing::info!("stage {}: no MFU in the metrics ({why})", spec.name);
    }
    let mut outcome = StageOutcome {
        name: spec.name.clone(),
        steps_run: 0,
        first_loss: None,
        last_loss: None,
        final_checkpoint: None,
    };
    let progress =
        StageProgress::new(options.progress && rank == 0, &spec.name, total, state.step, later_tokens);
    let started = Instant::now();
    let elapsed_before = state.elapsed_seconds;
    let mut saved_at = state.step;
    let mut signal = None;
    if rank == 0 {
        tracing::info!("stage {}: step {} of {}", spec.name, state.step, total);
    }

    while state.step < total {
        if budget.is_some_and(|b| b == 0) {
            break;
        }
        crate::faults::slow_step();
        let step_started = Instant::now();
        let collective_before = collective.seconds_in_collectives();
        throughput::reset_peak_memory();
        let (batch, loader_after) = batches.next()?;
        let data_wait = step_started.elapsed().as_secs_f64();
        let flops =
            throughput::step_flops(config, batch.cu_seqlens.windows(2).map(|w| (w[1] - w[0]) as usize));
        model.zero_grads();
        let (mut loss_sum, mut count) = (0.0f64, 0usize);
        for m in 0..micro_batches {
            let micro = batch.rows(m * spec.micro_batch..(m + 1) * spec.micro_batch);
            let share = group.share(&micro)?;
            let stats =
                loss_and_grads(&model, &share.input_ids, &share.labels, &share.layout, &mut |unit| {
                    model.reduce_scatter(unit)
                })?;
            loss_sum += stats.loss_sum;
            count += stats.count;
        }
        // The global batch's totals: loss, loss tokens, real tokens and those with loss (a
        // context group's rows counted once, by its first rank); and how many ranks were
        // asked to stop, so that all of them stop after the same step.
        let loss_tokens = batch.labels.iter().filter(|&&l| l != IGNORE).count();
        let vote = StopVote::cast(options);
        let once = if group.leads() { 1.0 } else { 0.0 };
        let mut totals = [
            loss_sum,
            count as f64,
            once * batch.real_tokens() as f64,
            once * loss_tokens as f64,
            once * flops,
            vote.ballot(),
        ];
        collective.all_reduce(&mut totals)?;
        let [loss_sum, count, tokens, loss_tokens, flops, votes] = totals;
        signal = signal.or(vote.outcome(votes));
        let count = count as usize;
        // The mean over the global batch's loss tokens; clipping on that mean's norm.
        let lr = schedule.lr(state.step);
        let (loss, grad_norm) = if count == 0 {
            tracing::warn!(
                "stage {} step {}: no token carries loss; the update is skipped",
                spec.name,
                state.step + 1
            );
            (None, 0.0)
        } else {
            let clip = (spec.clip_grad_norm > 0.0).then_some(spec.clip_grad_norm);
            let sum_norm = model.grad_norm()?;
            let norm = model.apply(sum_norm, count, clip, lr).map_err(|e| {
                TrainError::Invalid(format!(
                    "stage {} step {}: {e}; stopping before the weights are spoiled (the last checkpoint is intact)",
                    spec.name,
                    state.step + 1
                ))
            })?;
            (Some(loss_sum / count as f64), norm)
        };
        let tokens = tokens as u64;
        state.step += 1;
        state.tokens_seen += tokens;
        state.loader = loader_after;
        state.elapsed_seconds = elapsed_before + started.elapsed().as_secs_f64();
        if let Some(b) = budget.as_mut() {
            *b -= 1;
        }
        let seconds = step_started.elapsed().as_secs_f64().max(1e-9);
        let tflops = flops / seconds / 1e12;
        let m = StepMetrics {
            stage: spec.name.clone(),
            stage_index: state.stage_index,
            step: state.step,
            loss,
            lr,
            grad_norm,
            tokens,
            loss_tokens: loss_tokens as u64,
            tokens_seen: state.tokens_seen,
            tokens_per_second: tokens as f64 / seconds,
            elapsed_seconds: state.elapsed_seconds,
            tflops: Some(tflops),
            mfu: peak.as_ref().ok().map(|peak| tflops / (peak * world as f64)),
            peak_memory_bytes: throughput::step_memory(&options.device),
            data_wait_seconds: Some(data_wait),
            collective_seconds: Some(collective.seconds_in_collectives() - collective_before),
        };
        if let Some(metrics) = metrics.as_deref_mut() {
            metrics.append(&m)?;
            progress.step(&m);
        }
        outcome.steps_run += 1;
        if let Some(loss) = loss {
            outcome.first_loss.get_or_insert(loss);
            outcome.last_loss = Some(loss);
        }
        let due = spec.checkpoint_every.is_some_and(|every| every > 0 && state.step.is_multiple_of(every));
        if due || state.step == total {
            save(recipe, config, &model, &state, save_dtype, spec.keep_last)?;
            saved_at = state.step;
        }
        if let (Some(number), 0) = (signal, rank) {
            tracing::warn!(
                "stage {}: signal {number} received; stopping after step {} with a checkpoint",
                spec.name,
                state.step
            );
        }
        if signal.is_some() && state.step < total {
            break;
        }
    }
    progress.finish();
    if state.step < total {
        if saved_at != state.step {
            save(recipe, config, &model, &state, save_dtype, spec.keep_last)?;
        }
        if rank == 0 {
            tracing::info!("stage {}: stopped after step {} of {}", spec.name, state.step, total);
        }
        return Ok((StageEnd::Stopped { signal }, outcome));
    }
    let last = checkpoint::checkpoint_dir(&recipe.output_dir, &spec.name, state.step);
    if rank == 0 {
        tracing::info!("stage {} done: final checkpoint {}", spec.name, last.display());
    }
    outcome.final_checkpoint = Some(last);
    Ok((StageEnd::Finished(model.into_weights()?), outcome))
}

fn save(
    recipe: &Recipe,
    config: &Config,
    model: &ShardedModel,
    state: &TrainerState,
    dtype: DType,
    keep_last: usize,
) -> Result<()> {
    let dir = checkpoint::checkpoint_dir(&recipe.output_dir, &state.stage, state.step);
    let collective = model.collective();
    checkpoint::save(&dir, config, model, state, dtype)?;
    if collective.rank() == 0 {
        checkpoint::prune(&recipe.output_dir, &state.stage, keep_last);
    }
    tracing::debug!("checkpoint {}", dir.display());
    Ok(())
}
