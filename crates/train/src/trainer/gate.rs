//! What happens before any rank trains. Rank 0 takes the output directory's lock, removes
//! what interrupted checkpoint writes left behind, hashes the datasets' sources, refuses a
//! resume whose recipe or data changed *before* preparing anything (so a refused run has
//! not re-prepared the shared data directory), and prepares what is stale. The other
//! ranks wait for it however long that takes: rank 0 works on a thread of its own and
//! sends them a heartbeat well inside the collective timeout, which they log, instead of
//! leaving them to time out at a barrier. A stop signal meanwhile ends every rank at once:
//! there is nothing to save yet, and preparation writes only under temporary names.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
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

/// How the start ended: ready to train, or stopped by a signal (its number) first.
pub enum Opened {
    Ready(Gate),
    Stopped(usize),
}

/// What rank 0 tells the others while they wait.
#[derive(Serialize, Deserialize)]
enum Message {
    Waiting(String),
    Ready(BTreeMap<String, String>),
    Stopped(usize),
    Failed(String),
}

type Work = Result<(BTreeMap<String, String>, RunLock)>;

/// Every rank calls this; it returns once rank 0 has prepared the data, with the run's
/// fingerprint, or fails on every rank when rank 0 could not.
pub fn pass(
    recipe: &Recipe,
    tokenizer: &Arc<TextTokenizer>,
    config_json: &str,
    options: &TrainOptions,
) -> Result<Opened> {
    let collective = options.collective.as_ref();
    if collective.rank() != 0 {
        return wait_for_rank_zero(collective);
    }
    let status = Arc::new(Mutex::new(String::from("starting")));
    let results =
        spawn_work(recipe.clone(), tokenizer.clone(), config_json.to_string(), options, status.clone());
    // A beat well inside the others' collective timeout.
    let timeout = collective.timeout().unwrap_or(Duration::from_secs(600));
    let beat = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
    let mut last = Instant::now();
    let outcome = loop {
        match results.recv_timeout(Duration::from_millis(20)) {
            Ok(outcome) => break outcome,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(TrainError::Invalid("rank 0's preparation panicked".into()))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let signal = options.stop_signal.load(Ordering::SeqCst);
        if signal != 0 {
            // The preparation thread is left to the process's end.
            tracing::warn!("signal {signal} received before training started; stopping");
            send(collective, &Message::Stopped(signal))?;
            return Ok(Opened::Stopped(signal));
        }
        if last.elapsed() >= beat {
            let what = status.lock().map(|s| s.clone()).unwrap_or_default();
            send(collective, &Message::Waiting(what))?;
            last = Instant::now();
        }
    };
    match outcome {
        Ok((fingerprint, lock)) => {
            send(collective, &Message::Ready(fingerprint.clone()))?;
            Ok(Opened::Ready(Gate { fingerprint, _lock: Some(lock) }))
        }
        Err(e) => {
            // The others stop with rank 0's reason instead of a lost connection.
            let _ = send(collective, &Message::Failed(e.to_string()));
            Err(e)
        }
    }
}

/// Rank 0's work, on a thread of its own: lock, clean, hash, check, prepare.
fn spawn_work(
    recipe: Recipe,
    tokenizer: Arc<TextTokenizer>,
    config_json: String,
    options: &TrainOptions,
    status: Arc<Mutex<String>>,
) -> mpsc::Receiver<Work> {
    let (force, progress) = (options.force, options.progress);
    let (sender, results) = mpsc::channel();
    let set_status = move |what: &str| {
        if let Ok(mut status) = status.lock() {
            *status = what.to_string();
        }
    };
    std::thread::spawn(move || {
        let work = || -> Work {
            let lock = RunLock::acquire(&recipe.output_dir)?;
            remove_leftovers(&recipe);
            set_status("hashing the datasets' sources");
            let digests = hash_sources(&recipe)?;
            let fingerprint = recipe.fingerprint(&config_json, tokenizer.hash(), &digests)?;
            if let Some((dir, state)) = checkpoint::newest_anywhere(&recipe.output_dir) {
                check_unchanged(&recipe, &dir, &state, &fingerprint, force, true)?;
            }
            set_status("preparing the datasets");
            prepare_stale(&recipe, &tokenizer, &digests, progress)?;
            Ok((fingerprint, lock))
        };
        let _ = sender.send(work());
    });
    results
}

/// Tells the other ranks (a broadcast: nothing moves in a group of one).
fn send(collective: &dyn davinci_dist::Collective, message: &Message) -> Result<()> {
    let bytes = serde_json::to_vec(message).map_err(|e| TrainError::Invalid(e.to_string()))?;
    collective.broadcast(bytes, 0)?;
    Ok(())
}

fn wait_for_rank_zero(collective: &dyn davinci_dist::Collective) -> Result<Opened> {
    let started = Instant::now();
    loop {
        let bytes = collective.broadcast(Vec::new(), 0)?;
        let message: Message = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::Invalid(format!("an unreadable message from rank 0: {e}")))?;
        match message {
            Message::Waiting(what) => {
                tracing::info!("waiting for rank 0 ({what}, {:.0} s so far)", started.elapsed().as_secs_f64())
            }
            Message::Ready(fingerprint) => return Ok(Opened::Ready(Gate { fingerprint, _lock: None })),
            Message::Stopped(signal) => {
                tracing::warn!("rank 0 stopped for signal {signal} before training started");
                return Ok(Opened::Stopped(signal));
            }
            Message::Failed(why) => {
                return Err(TrainError::Invalid(format!("rank 0 could not start: {why}")))
            }
        }
    }
}

/// Clears what interrupted checkpoint writes left in every stage directory (see
/// [`checkpoint::clean_leftovers`]), so that a restart after a full disk has the room of
/// one checkpoint back. A failure is only a warning (the next save tries again).
fn remove_leftovers(recipe: &Recipe) {
    for stage in checkpoint::stage_dirs(&recipe.output_dir) {
        checkpoint::clean_leftovers(&recipe.output_dir, &stage, &|dir: &std::path::Path| {
            tracing::info!("removing {}, left by an interrupted checkpoint write", dir.display());
            std::fs::remove_dir_all(dir)
        });
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
