//! What happens before any rank trains. Rank 0 takes the output directory's lock, removes
//! what interrupted checkpoint writes left behind, hashes the datasets' sources, refuses a
//! resume whose recipe or data changed *before* preparing anything (so a refused run has
//! not re-prepared the shared data directory), and prepares what is stale. The other
//! ranks wait for it however long that takes: rank 0 works on a thread of its own and
//! sends them a heartbeat well inside the collective timeout, which they log, instead of
//! leaving them to time out at a barrier.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use davinci_data::tokenize::TextTokenizer;
use serde::{Deserialize, Serialize};

use super::setup::{hash_sources, prepare_stale};
use super::TrainOptions;
use crate::checkpoint::{self, TrainerState};
use crate::error::{Result, TrainError};
use crate::lock::RunLock;
use crate::recipe::{changed_parts, Recipe};

/// The run's fingerprint, and the output directory's lock (rank 0 only) to hold until the
/// run ends.
pub struct Gate {
    pub fingerprint: BTreeMap<String, String>,
    pub _lock: Option<RunLock>,
}

/// What rank 0 tells the others while they wait.
#[derive(Serialize, Deserialize)]
enum Message {
    Waiting(String),
    Ready(BTreeMap<String, String>),
    Failed(String),
}

/// Every rank calls this; it returns once rank 0 has prepared the data, with the run's
/// fingerprint, or fails on every rank when rank 0 could not.
pub fn pass(
    recipe: &Recipe,
    tokenizer: &TextTokenizer,
    config_json: &str,
    options: &TrainOptions,
) -> Result<Gate> {
    let collective = options.collective.as_ref();
    if collective.rank() != 0 {
        return wait_for_rank_zero(collective).map(|fingerprint| Gate { fingerprint, _lock: None });
    }
    let status = Mutex::new(String::from("starting"));
    let set_status = |what: String| {
        if let Ok(mut status) = status.lock() {
            *status = what;
        }
    };
    let work = || -> Result<(BTreeMap<String, String>, RunLock)> {
        let lock = RunLock::acquire(&recipe.output_dir)?;
        remove_leftovers(recipe);
        set_status("hashing the datasets' sources".into());
        let digests = hash_sources(recipe)?;
        let fingerprint = recipe.fingerprint(config_json, tokenizer.hash(), &digests);
        if let Some((dir, state)) = checkpoint::newest_anywhere(&recipe.output_dir) {
            check_unchanged(recipe, &dir, &state, &fingerprint, options.force, true)?;
        }
        set_status("preparing the datasets".into());
        prepare_stale(recipe, tokenizer, &digests, options.progress)?;
        Ok((fingerprint, lock))
    };
    if collective.world() == 1 {
        let (fingerprint, lock) = work()?;
        return Ok(Gate { fingerprint, _lock: Some(lock) });
    }
    // A beat well inside the others' collective timeout.
    let beat = (options.collective_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
    let outcome = std::thread::scope(|scope| {
        let worker = scope.spawn(work);
        let mut last = Instant::now();
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
            if last.elapsed() >= beat {
                let what = status.lock().map(|s| s.clone()).unwrap_or_default();
                send(collective, &Message::Waiting(what))?;
                last = Instant::now();
            }
        }
        worker.join().unwrap_or_else(|_| Err(TrainError::Invalid("rank 0's preparation panicked".into())))
    });
    match outcome {
        Ok((fingerprint, lock)) => {
            send(collective, &Message::Ready(fingerprint.clone()))?;
            Ok(Gate { fingerprint, _lock: Some(lock) })
        }
        Err(e) => {
            // The others stop with rank 0's reason instead of a lost connection.
            let _ = send(collective, &Message::Failed(e.to_string()));
            Err(e)
        }
    }
}

fn send(collective: &dyn davinci_dist::Collective, message: &Message) -> Result<()> {
    let bytes = serde_json::to_vec(message).map_err(|e| TrainError::Invalid(e.to_string()))?;
    collective.broadcast(bytes, 0)?;
    Ok(())
}

fn wait_for_rank_zero(collective: &dyn davinci_dist::Collective) -> Result<BTreeMap<String, String>> {
    let started = Instant::now();
    loop {
        let bytes = collective.broadcast(Vec::new(), 0)?;
        let message: Message = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::Invalid(format!("an unreadable message from rank 0: {e}")))?;
        match message {
            Message::Waiting(what) => {
                tracing::info!("waiting for rank 0 ({what}, {:.0} s so far)", started.elapsed().as_secs_f64())
            }
            Message::Ready(fingerprint) => return Ok(fingerprint),
            Message::Failed(why) => {
                return Err(TrainError::Invalid(format!("rank 0 could not start: {why}")))
            }
        }
    }
}

/// Removes the temporary directories that interrupted checkpoint writes left in every
/// stage directory, so that a restart after a full disk has the room of one checkpoint
/// back. A failure is only a warning (the next save tries again).
fn remove_leftovers(recipe: &Recipe) {
    let stages = std::fs::read_dir(&recipe.output_dir).into_iter().flatten().filter_map(|e| e.ok());
    for stage in stages.filter(|e| e.path().is_dir()) {
        let name = stage.file_name().to_string_lossy().into_owned();
        for dir in checkpoint::leftovers(&recipe.output_dir, &name) {
            tracing::info!("removing {}, left by an interrupted checkpoint write", dir.display());
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("could not remove {}: {e}", dir.display());
            }
        }
    }
}

/// Refuses to resume from checkpoint `dir` when the recipe's fingerprint changed since it
/// was written (naming what changed), unless `force` (then it `warn`s).
pub fn check_unchanged(
    recipe: &Recipe,
    dir: &std::path::Path,
    state: &TrainerState,
    fingerprint: &BTreeMap<String, String>,
    force: bool,
    warn: bool,
) -> Result<()> {
    let changed = changed_parts(&state.recipe, fingerprint);
    if changed.is_empty() {
        return Ok(());
    }
    let what = changed.join(", ");
    if !force {
        return Err(TrainError::Invalid(format!(
            "{}: the recipe or its data changed since checkpoint {} was written ({what}); start in a new \
             output_dir, or pass --force to resume anyway",
            recipe.path.display(),
            dir.display()
        )));
    }
    if warn {
        tracing::warn!("resuming from {} although the recipe changed ({what})", dir.display());
    }
    Ok(())
}
