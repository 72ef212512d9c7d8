//! `davinci launch --nproc N -- train RECIPE.toml`: starts N local ranks with the variables
//! torchrun sets (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) and a
//! fresh per-job secret for the rendezvous (`DAVINCI_JOB_SECRET`), waits for them, and
//! fails, naming the rank, when one fails.
//!
//! Signals: the ranks run in a process group of their own, so a Ctrl-C at the terminal
//! reaches the launcher alone, which forwards SIGTERM, SIGINT and SIGUSR1 to every rank
//! once per signal received (the ranks then stop together with a checkpoint; a second
//! Ctrl-C ends them at once, a third kills them and the launcher). Each rank gets SIGTERM
//! when the launcher dies, however it dies, so no rank trains on as an orphan.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::signals::{self, EXIT_STOPPED_BY_SIGNAL, STOP_SIGNALS};

#[derive(clap::Args)]
pub struct Args {
    /// Processes to start on this host.
    #[arg(long)]
    nproc: usize,
    /// Port where rank 0 listens (default: a free one).
    #[arg(long)]
    master_port: Option<u16>,
    /// Seconds the other ranks get to finish after one has failed, before they are killed.
    #[arg(long, default_value_t = 60)]
    grace: u64,
    /// The davinci command each rank runs, e.g. `train recipes/tiny.toml`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    if args.nproc == 0 {
        bail!("--nproc must be at least 1");
    }
    let port = match args.master_port {
        Some(port) => port,
        None => std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
    };
    let received = Arc::new(AtomicUsize::new(0));
    for signal in STOP_SIGNALS {
        signal_hook::flag::register_usize(signal, received.clone(), signal as usize)
            .with_context(|| format!("installing a handler for signal {signal}"))?;
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("drawing the job's secret: {e}"))?;
    let secret = hex::encode(secret);
    let exe = std::env::current_exe().context("finding the davinci executable")?;
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(args.nproc);
    for rank in 0..args.nproc {
        let mut command = Command::new(&exe);
        command
            .args(&args.command)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", args.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("DAVINCI_JOB_SECRET", &secret);
        tie_to_this_process(&mut command);
        let child = command.spawn().with_context(|| format!("starting rank {rank}"))?;
        children.push((rank, child));
    }
    let mut failure: Option<(usize, String, Instant)> = None;
    let mut stopped_by_signal = false;
    let mut interrupts = 0;
    while !children.is_empty() {
        let signal = received.swap(0, Ordering::SeqCst);
        interrupts += (signal == libc::SIGINT as usize) as usize;
        if interrupts >= 3 {
            for (rank, child) in &mut children {
                tracing::warn!("a third Ctrl-C: killing rank {rank}");
                let _ = child.kill();
                let _ = child.wait();
            }
            std::process::exit(130);
        }
        if signal != 0 {
            tracing::warn!("{} received: passing it to the ranks", signals::name(signal));
            for (_, child) in &children {
                // SAFETY: kill(2) on our own child's pid, which `children` keeps unreaped.
                unsafe { libc::kill(child.id() as libc::pid_t, signal as libc::c_int) };
            }
        }
        let mut still = Vec::with_capacity(children.len());
        for (rank, mut child) in children {
            match child.try_wait()? {
                Some(status) if status.code() == Some(EXIT_STOPPED_BY_SIGNAL) => stopped_by_signal = true,
                Some(status) if !status.success() && failure.is_none() => {
                    failure = Some((rank, status.to_string(), Instant::now()));
                }
                Some(_) => {}
                None => still.push((rank, child)),
            }
        }
        children = still;
        if let Some((_, _, since)) = &failure {
            if since.elapsed() > Duration::from_secs(args.grace) {
                for (rank, child) in &mut children {
                    tracing::warn!("killing rank {rank}, still running {} s after a rank failed", args.grace);
                    let _ = child.kill();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match failure {
        Some((rank, status, _)) => bail!("rank {rank} of {} failed ({status})", args.nproc),
        None if stopped_by_signal => std::process::exit(EXIT_STOPPED_BY_SIGNAL),
        None => Ok(()),
    }
}

/// A rank of its own process group (the terminal's Ctrl-C goes to the launcher, which
/// forwards it once), sent SIGTERM when the launcher dies.
fn tie_to_this_process(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    #[cfg(target_os = "linux")]
    {
        let launcher = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls: prctl, getppid, kill.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The launcher died before the line above: nothing would signal us later.
                if libc::getppid() as u32 != launcher {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                Ok(())
            });
        }
    }
}
