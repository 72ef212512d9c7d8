//! Stopping gracefully. SLURM sends SIGTERM before it preempts a job (and SIGUSR1 where a
//! script asks for a warning with `--signal`); a person presses Ctrl-C. These only record
//! their number: the trainer's ranks agree on it at the next step's collective, write a
//! checkpoint and exit with [`EXIT_STOPPED_BY_SIGNAL`]. A repeated SIGTERM or SIGUSR1 is
//! ignored (SLURM signals every process of a step, and a launcher passes its own on, so a
//! rank often gets two); a second Ctrl-C (SIGINT) ends the process at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

/// The signals that stop a run gracefully.
pub const STOP_SIGNALS: [i32; 3] = [SIGTERM, SIGINT, SIGUSR1];

/// The exit status of a run that a signal stopped after writing its checkpoint: "try again"
/// (sysexits' EX_TEMPFAIL), so that a requeue script can tell it from a failure.
pub const EXIT_STOPPED_BY_SIGNAL: i32 = 75;

/// Records each stop signal's number in `received`; a second SIGINT takes its default
/// action (the process ends at once).
pub fn install(received: Arc<AtomicUsize>) -> Result<()> {
    let interrupted = Arc::new(AtomicBool::new(false));
    // In this order: a SIGINT that finds `interrupted` set dies; else it sets it.
    signal_hook::flag::register_conditional_default(SIGINT, interrupted.clone())
        .and_then(|_| signal_hook::flag::register(SIGINT, interrupted))
        .context("installing a handler for SIGINT")?;
    for signal in STOP_SIGNALS {
        signal_hook::flag::register_usize(signal, received.clone(), signal as usize)
            .with_context(|| format!("installing a handler for signal {signal}"))?;
    }
    Ok(())
}

/// While the returned guard lives, a stop signal ends the process at once with
/// [`EXIT_STOPPED_BY_SIGNAL`]: for waits with nothing to save (`during` says which), such
/// as a rendezvous that may wait many minutes for the other ranks.
pub fn exit_if_stopped_meanwhile(received: Arc<AtomicUsize>, during: &'static str) -> WatchGuard {
    let active = Arc::new(AtomicBool::new(true));
    let watching = active.clone();
    std::thread::spawn(move || {
        while watching.load(Ordering::SeqCst) {
            let signal = received.load(Ordering::SeqCst);
            if signal != 0 {
                eprintln!("stopped by {} {during}; run the same command again to continue", name(signal));
                std::process::exit(EXIT_STOPPED_BY_SIGNAL);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    WatchGuard(active)
}

/// Ends the watch of [`exit_if_stopped_meanwhile`] when dropped.
pub struct WatchGuard(Arc<AtomicBool>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
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
