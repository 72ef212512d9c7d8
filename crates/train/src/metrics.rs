//! What a person sees: `metrics.jsonl` (one JSON object per optimizer step), the same
//! scalars in a TensorBoard event file beside it, and a progress bar per stage, or a log
//! line per step where stderr is not a terminal.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use davinci_model::error::io_at;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::human;
use crate::tensorboard::EventWriter;

pub const METRICS_FILE: &str = "metrics.jsonl";

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub stage: String,
    pub stage_index: usize,
    /// 1-based: the number of optimizer steps taken in the stage after this one.
    pub step: u64,
    /// Mean loss per loss-bearing token of the global batch; `null` for a step whose
    /// batch had no loss-bearing token (its update was skipped; the step still counts).
    pub loss: Option<f64>,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real (non-padding) tokens of this step, and loss-bearing ones.
    pub tokens: u64,
    pub loss_tokens: u64,
    /// Real tokens of the stage so far.
    pub tokens_seen: u64,
    pub tokens_per_second: f64,
    pub elapsed_seconds: f64,
    /// Model TFLOP/s of the whole job (see [`crate::throughput::step_flops`]).
    #[serde(default)]
    pub tflops: Option<f64>,
    /// `tflops` over the devices' peak; none where the peak is unknown (the CPU).
    #[serde(default)]
    pub mfu: Option<f64>,
    /// Rank 0's memory for the step (see [`crate::throughput::step_memory`]).
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// Rank 0's wait for the step's batch, and its time inside blocking collectives.
    #[serde(default)]
    pub data_wait_seconds: Option<f64>,
    #[serde(default)]
    pub collective_seconds: Option<f64>,
}

/// Appends to `metrics.jsonl`, one line per step, flushed as written, and the same
/// scalars to the run's TensorBoard event file.
pub struct MetricsLog {
    file: File,
    path: PathBuf,
    events: EventWriter,
}

impl MetricsLog {
    /// Opens the log of a run in `dir`. Starting afresh (`resume_at` none) empties it;
    /// resuming keeps only the steps up to the checkpoint resumed from, so that steps a
    /// crash cut off are not counted twice.
    pub fn open(dir: &Path, resume_at: Option<(usize, u64)>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let path = dir.join(METRICS_FILE);
        let kept: Vec<(String, StepMetrics)> = match (resume_at, File::open(&path)) {
            (Some((stage_index, step)), Ok(file)) => BufReader::new(file)
                .lines()
                .map_while(|line| line.ok())
                .filter_map(|line| serde_json::from_str::<StepMetrics>(&line).ok().map(|m| (line, m)))
                .filter(|(_, m)| (m.stage_index, m.step) <= (stage_index, step))
                .collect(),
            _ => Vec::new(),
        };
        let events = EventWriter::create(dir, kept.iter().map(|(_, m)| m))?;
        let kept: Vec<String> = kept.into_iter().map(|(line, _)| line).collect();
        let tmp = dir.join(format!(".{METRICS_FILE}.tmp-{}", std::process::id()));
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(&tmp, text).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io_at(&path))?;
        Ok(Self { file, path, events })
    }

    pub fn append(&mut self, metrics: &StepMetrics) -> Result<()> {
        let mut line = serde_json::to_string(metrics).unwrap_or_default();
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io_at(&self.path))?;
        self.events.append(metrics)
    }
}

/// Reads a `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let text = std::fs::read_to_string(path).map_err(io_at(path))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| crate::TrainError::Invalid(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Seconds left in a stage and in the whole recipe: `elapsed` seconds took `taken` steps of
/// `tokens_per_step` tokens; `left` steps remain in the stage, then `later_tokens` tokens in
/// the later stages, taken at the same tokens/s.
fn remaining_seconds(
    elapsed: f64,
    taken: u64,
    left: u64,
    tokens_per_step: u64,
    later_tokens: u64,
) -> (f64, f64) {
    let per_step = elapsed / taken.max(1) as f64;
    let stage = per_step * left as f64;
    let tokens_per_second = tokens_per_step as f64 / per_step.max(1e-9);
    (stage, stage + later_tokens as f64 / tokens_per_second.max(1e-9))
}

/// The bar of one stage; hidden where stderr is not a terminal, and then each step is
/// logged through `tracing` instead. Both give the stage's ETA and the whole recipe's (the
/// later stages' tokens at this stage's tokens/s).
pub struct StageProgress {
    bar: indicatif::ProgressBar,
    total_steps: u64,
    later_tokens: u64,
    /// When this invocation's first step of the stage began, and the step it began at.
    started: std::time::Instant,
    first_step: u64,
}

impl StageProgress {
    pub fn new(enabled: bool, stage: &str, total_steps: u64, done: u64, later_tokens: u64) -> Self {
        let bar =
            if enabled { indicatif::ProgressBar::new(total_steps) } else { indicatif::ProgressBar::hidden() };
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] step {pos}/{len} {msg} [{elapsed}]")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(stage.to_string());
        bar.set_position(done);
        Self { bar, total_steps, later_tokens, started: std::time::Instant::now(), first_step: done }
    }

    /// Seconds left in the stage and in the recipe, from this invocation's pace so far.
    fn eta(&self, m: &StepMetrics) -> (f64, f64) {
        let taken = m.step.saturating_sub(self.first_step);
        let left = self.total_steps.saturating_sub(m.step);
        remaining_seconds(self.started.elapsed().as_secs_f64(), taken, left, m.tokens, self.later_tokens)
    }

    pub fn step(&self, m: &StepMetrics) {
        let (stage_eta, recipe_eta) = self.eta(m);
        let (stage_eta, recipe_eta) = (human::duration(stage_eta), human::duration(recipe_eta));
        let mfu = m.mfu.map(|u| format!(" MFU {:.1}%", 100.0 * u)).unwrap_or_default();
        let loss = m.loss.map_or("none (no loss tokens; update skipped)".into(), |l| format!("{l:.4}"));
        self.bar.set_position(m.step);
        self.bar.set_message(format!(
            "loss {loss} lr {:.2e} {:.0} tok/s{mfu} ETA {stage_eta}, recipe {recipe_eta}",
            m.lr, m.tokens_per_second
        ));
        if self.bar.is_hidden() {
            let memory = m.peak_memory_bytes.map(|b| format!(", {}", human::bytes(b))).unwrap_or_default();
            tracing::info!(
                "{} step {}/{}: loss {loss}, lr {:.3e}, grad norm {:.3}, {:.0} tokens/s, {:.3} TFLOP/s{mfu}{memory}; ETA {stage_eta} (recipe {recipe_eta})",
                m.stage,
                m.step,
                self.total_steps,
                m.lr,
                m.grad_norm,
                m.tokens_per_second,
                m.tflops.unwrap_or(0.0),
            );
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64, loss: Option<f64>) -> StepMetrics {
        StepMetrics {
            stage: "mt".into(),
            stage_index: 0,
            step,
            loss,
            lr: 1e-3,
            grad_norm: 0.5,
            tokens: 64,
            loss_tokens: if loss.is_some() { 60 } else { 0 },
            tokens_seen: 64 * step,
            tokens_per_second: 100.0,
            elapsed_seconds: step as f64,
            tflops: None,
            mfu: None,
            peak_memory_bytes: None,
            data_wait_seconds: None,
            collective_seconds: None,
        }
    }

    #[test]
    fn a_step_without_loss_tokens_is_logged_as_null_and_kept_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), None).unwrap();
        for m in [step(1, Some(7.5)), step(2, None), step(3, Some(7.0))] {
            log.append(&m).unwrap();
        }
        drop(log);
        let text = std::fs::read_to_string(dir.path().join(METRICS_FILE)).unwrap();
        assert!(text.lines().nth(1).unwrap().contains("\"loss\":null"), "{text}");
        // Resuming from step 2's checkpoint keeps steps 1 and 2 (the lossless one too).
        MetricsLog::open(dir.path(), Some((0, 2))).unwrap();
        let kept = read_metrics(&dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(kept, vec![step(1, Some(7.5)), step(2, None)]);
    }

    #[test]
    fn the_recipe_eta_adds_the_later_stages_tokens_at_the_current_pace() {
        // 5 steps of 1,000 tokens in 10 s: 2 s a step, 500 tokens/s. 10 steps left take
        // 20 s, and 20,000 tokens of later stages 40 s more.
        assert_eq!(remaining_seconds(10.0, 5, 10, 1_000, 20_000), (20.0, 60.0));
        // The last step of the last stage: nothing left.
        assert_eq!(remaining_seconds(10.0, 5, 0, 1_000, 0), (0.0, 0.0));
    }
}
