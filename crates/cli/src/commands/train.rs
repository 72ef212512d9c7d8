//! `davinci train RECIPE.toml`: runs a recipe's stages in order, resuming from the newest
//! complete checkpoint when started again.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use davinci_dist::{connect_from_env, LaunchEnv};
use davinci_train::trainer::job_fingerprint;
use davinci_train::{train, Recipe, TrainOptions};

use crate::args::{local_cuda_ordinal, parse_device};
use crate::signals;

#[derive(clap::Args)]
pub struct Args {
    /// The recipe file.
    recipe: PathBuf,
    /// Write checkpoints and metrics here instead of the recipe's output_dir.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Read and prepare datasets under this directory instead of the recipe's data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// cpu, cuda or cuda:N. Under a launcher, `cuda` is the GPU of LOCAL_RANK (one process
    /// per GPU; the only visible one under SLURM's per-task binding), and the ranks talk
    /// through NCCL.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Resume even though the recipe changed in a way that matters (model, data, seq_len),
    /// and train on a GPU a stage that `davinci plan` predicts will not fit.
    #[arg(long)]
    force: bool,
    /// Stop after this many optimizer steps, with a checkpoint; run again to continue.
    #[arg(long)]
    stop_after: Option<u64>,
    /// No progress bar (each step is logged instead).
    #[arg(long)]
    no_progress: bool,
    /// Seconds a rank waits for the others (at start and at each collective) before it
    /// fails, naming the ranks it waited for.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

pub fn run(args: Args) -> Result<()> {
    let stop_signal = Arc::new(AtomicUsize::new(0));
    signals::install(stop_signal.clone())?;
    let mut recipe = Recipe::from_file(&args.recipe)?;
    if let Some(dir) = args.output_dir {
        recipe.output_dir = dir;
    }
    if let Some(dir) = args.data_dir {
        recipe.data_dir = std::env::current_dir()?.join(dir);
    }
    // Under torchrun, SLURM or `davinci launch`, join the other ranks; alone, a group of one.
    let fingerprint = job_fingerprint(&recipe)?;
    let launch = LaunchEnv::from_vars(|name| std::env::var(name).ok())?;
    let device = match (args.device.as_str(), &launch) {
        ("cuda", Some(env)) => {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
            parse_device(&format!("cuda:{}", local_cuda_ordinal(env.local_rank, visible.as_deref())))?
        }
        (name, _) => parse_device(name)?,
    };
    let connected = signals::exit_if_stopped_meanwhile(stop_signal.clone(), "during the rendezvous");
    let collective = connect_from_env(&fingerprint, Duration::from_secs(args.timeout), &device)?;
    drop(connected);
    let rank = collective.rank();
    let options = TrainOptions {
        collective,
        device,
        force: args.force,
        stop_after: args.stop_after,
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        stop_signal,
    };
    let summary = train(&recipe, &options)
        .with_context(|| format!("rank {rank}: training {}", args.recipe.display()))?;
    if rank != 0 {
        return exit_as(&summary);
    }
    match (&summary.resumed_from, summary.stages.is_empty()) {
        (Some(from), true) => println!("every stage is done; the final checkpoint is {}", from.display()),
        (Some(from), false) => println!("resumed from {}", from.display()),
        _ => {}
    }
    for stage in &summary.stages {
        let losses = match (stage.first_loss, stage.last_loss) {
            (Some(first), Some(last)) => format!(", loss {first:.4} -> {last:.4}"),
            _ => String::new(),
        };
        let end = match &stage.final_checkpoint {
            Some(dir) => format!(", final checkpoint {}", dir.display()),
            None => ", stopped early".into(),
        };
        println!("stage {}: {} steps{losses}{end}", stage.name, stage.steps_run);
    }
    match summary.stopped_by_signal {
        Some(signal) if summary.stages.is_empty() => println!(
            "stopped by {} before training started; run the same command again to continue",
            signals::name(signal)
        ),
        Some(signal) => println!(
            "stopped by {} with a checkpoint; run the same command again to continue",
            signals::name(signal)
        ),
        None if summary.stopped_early => {
            println!("stopped after --stop-after steps; run the same command again to continue")
        }
        None => {}
    }
    exit_as(&summary)
}

/// A run a signal stopped exits with its own status on every rank (see
/// [`signals::EXIT_STOPPED_BY_SIGNAL`]).
fn exit_as(summary: &davinci_train::RunSummary) -> Result<()> {
    if summary.stopped_by_signal.is_some() {
        std::io::stdout().flush()?;
        std::process::exit(signals::EXIT_STOPPED_BY_SIGNAL);
    }
    Ok(())
}
