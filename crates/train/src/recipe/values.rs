//! The values of a recipe, checked when it is read: a beta of 1.5, a negative epsilon, a
//! stage named `../../x` or a `seq_len` of two billion is an error naming the file, the
//! line of the stage's table, the stage and the key, before anything is prepared,
//! allocated or written.

use davinci_model::checkpoint::checksums::is_plain_file_name;

use super::{Recipe, StageSpec};
use crate::error::{Result, TrainError};

/// Longest row a stage may ask for: 8x the paper's 128K, far beyond what fits anywhere
/// today, and small enough that nothing sized from it overflows.
pub const MAX_SEQ_LEN: u32 = 1 << 20;
/// Most rows of `seq_len` in one optimizer step.
pub const MAX_ROWS_PER_STEP: u64 = 1 << 20;

/// The line of the `index`-th table header `[[name]]` in `text` (1-based), 0 if not found.
fn table_line(text: &str, name: &str, index: usize) -> usize {
    let header = format!("[[{name}]]");
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with(&header))
        .nth(index)
        .map_or(0, |(i, _)| i + 1)
}

/// A name that becomes a directory (a stage's checkpoints, a dataset's shards): letters,
/// digits, `-`, `_` and `.`, not starting with a dot, so it cannot leave its parent.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && is_plain_file_name(name)
}

impl Recipe {
    /// Checks every value of the recipe read from `text`.
    pub(super) fn check_values(&self, text: &str) -> Result<()> {
        for (i, dataset) in self.datasets.iter().enumerate() {
            if !is_plain_name(&dataset.name) {
                return Err(TrainError::Recipe {
                    path: self.path.clone(),
                    line: table_line(text, "datasets", i),
                    message: format!(
                        "dataset name `{}` must be letters, digits, `-`, `_` or `.` (it names a directory)",
                        dataset.name
                    ),
                });
            }
        }
        for (i, stage) in self.stages.iter().enumerate() {
            check_stage(stage).map_err(|message| TrainError::Recipe {
                path: self.path.clone(),
                line: table_line(text, "stages", i),
                message: format!("stage `{}`: {message}", stage.name),
            })?;
        }
        Ok(())
    }
}

fn check_stage(stage: &StageSpec) -> std::result::Result<(), String> {
    let in_range = |key: &str, value: f64, ok: bool, range: &str| {
        if ok && value.is_finite() {
            Ok(())
        } else {
            Err(format!("`{key}` = {value} must be {range}"))
        }
    };
    if !is_plain_name(&stage.name) {
        return Err(
            "the name must be letters, digits, `-`, `_` or `.` (it names the checkpoints' directory)".into(),
        );
    }
    if stage.seq_len == 0 || stage.seq_len > MAX_SEQ_LEN {
        return Err(format!("`seq_len` = {} must be in 1..={MAX_SEQ_LEN}", stage.seq_len));
    }
    let rows = stage.tokens_per_step / stage.seq_len as u64;
    if stage.tokens_per_step == 0 || rows > MAX_ROWS_PER_STEP {
        return Err(format!(
            "`tokens_per_step` = {} must be positive and at most {MAX_ROWS_PER_STEP} rows of seq_len",
            stage.tokens_per_step
        ));
    }
    if stage.micro_batch == 0 || stage.micro_batch as u64 > rows.max(1) {
        return Err(format!(
            "`micro_batch` = {} must be in 1..={} (the rows of a step)",
            stage.micro_batch, rows
        ));
    }
    if stage.context_parallel == 0 {
        return Err("`context_parallel` must be at least 1".into());
    }
    if stage.pack_window == 0 {
        return Err("`pack_window` must be at least 1".into());
    }
    if stage.mixture.is_empty() {
        return Err("`mixture` is empty: name at least one dataset".into());
    }
    for entry in &stage.mixture {
        let key = format!("upsample` of `{}", entry.dataset);
        in_range(&key, entry.upsample, entry.upsample >= 0.0, "a finite number >= 0")?;
    }
    if stage.mixture.iter().all(|entry| entry.upsample == 0.0) {
        return Err("every dataset of `mixture` has `upsample` = 0: the stage would read nothing".into());
    }
    let lr = &stage.lr;
    in_range("lr.peak", lr.peak, lr.peak > 0.0, "finite and > 0")?;
    in_range("lr.min", lr.min, (0.0..=lr.peak).contains(&lr.min), "in [0, lr.peak]")?;
    in_range("lr.warmup", lr.warmup, (0.0..1.0).contains(&lr.warmup), "in [0, 1)")?;
    in_range(
        "lr.decay_fraction",
        lr.decay_fraction,
        lr.decay_fraction > 0.0 && lr.decay_fraction <= 1.0,
        "in (0, 1]",
    )?;
    let adam = &stage.optimizer;
    in_range("optimizer.beta1", adam.beta1, (0.0..1.0).contains(&adam.beta1), "in [0, 1)")?;
    in_range("optimizer.beta2", adam.beta2, (0.0..1.0).contains(&adam.beta2), "in [0, 1)")?;
    in_range("optimizer.eps", adam.eps, adam.eps > 0.0, "finite and > 0")?;
    in_range("optimizer.weight_decay", adam.weight_decay, adam.weight_decay >= 0.0, "finite and >= 0")?;
    in_range(
        "clip_grad_norm",
        stage.clip_grad_norm,
        stage.clip_grad_norm >= 0.0,
        "finite and >= 0 (0: no clipping)",
    )?;
    if let Some(epochs) = stage.epochs {
        in_range("epochs", epochs, epochs > 0.0, "finite and > 0")?;
    }
    if stage.steps == Some(0) {
        return Err("`steps` must be at least 1".into());
    }
    if stage.checkpoint_every == Some(0) {
        return Err(
            "`checkpoint_every` must be at least 1 (leave it out for only the final checkpoint)".into()
        );
    }
    if stage.keep_last == 0 {
        return Err("`keep_last` must be at least 1 (the newest checkpoint is what a resume needs)".into());
    }
    Ok(())
}
