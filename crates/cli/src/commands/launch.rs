//! `davinci launch --nproc N -- train RECIPE.toml`: starts N local ranks with the variables
//! torchrun sets (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), waits
//! for them, and fails, naming the rank, when one fails.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

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
    let exe = std::env::current_exe().context("finding the davinci executable")?;
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(args.nproc);
    for rank in 0..args.nproc {
        let child = Command::new(&exe)
            .args(&args.command)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", args.nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
            .with_context(|| format!("starting rank {rank}"))?;
        children.push((rank, child));
    }
    let mut failure: Option<(usize, String, Instant)> = None;
    while !children.is_empty() {
        let mut still = Vec::with_capacity(children.len());
        for (rank, mut child) in children {
            match child.try_wait()? {
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
        None => Ok(()),
    }
}
