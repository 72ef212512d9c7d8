//! Stopping gracefully. SLURM sends SIGTERM before it preempts a job (and SIGUSR1 where a
//! script asks for a warning with `--signal`); a person presses Ctrl-C. The first of these
//! only records its number: the trainer's ranks agree on it at the next step's collective,
//! write a checkpoint and exit with [`EXIT_STOPPED_BY_SIGNAL`]. A second one ends the
//! process at once, as if no handler were installed.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

/// The signals that stop a run gracefully.
pub const STOP_SIGNALS: [i32; 3] = [SIGTERM, SIGINT, SIGUSR1];

/// The exit status of a run that a signal stopped after writing its checkpoint: "try again"
/// (sysexits' EX_TEMPFAIL), so that a requeue script can tell it from a failure.
pub const EXIT_STOPPED_BY_SIGNAL: i32 = 75;

/// Records the first stop signal's number in `received`; a second signal of any of them
/// takes its default action (the process ends at once).
pub fn install(received: Arc<AtomicUsize>) -> Result<()> {
    let seen = Arc::new(AtomicBool::new(false));
    for signal in STOP_SIGNALS {
        // In this order: a signal that finds `seen` set dies; else it sets it and records.
        signal_hook::flag::register_conditional_default(signal, seen.clone())
            .and_then(|_| signal_hook::flag::register(signal, seen.clone()))
            .and_then(|_| signal_hook::flag::register_usize(signal, received.clone(), signal as usize))
            .with_context(|| format!("installing a handler for signal {signal}"))?;
    }
    Ok(())
}

/// The name of a stop signal, for messages.
pub fn name(signal: usize) -> String {
    match signal as i32 {
        SIGTERM => "SIGTERM".into(),
        SIGINT => "SIGINT".into(),
        SIGUSR1 => "SIGUSR1".into(),
        other => format!("signal {other}"),
    }
}
