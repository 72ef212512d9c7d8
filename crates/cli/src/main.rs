//! `davinci`: the command line of the davinci training framework.

mod args;
mod commands;
mod runtime;
mod signals;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Counts heap bytes, for `bench step`'s peak memory.
#[global_allocator]
static ALLOCATOR: davinci_train::memory::CountingAlloc = davinci_train::memory::CountingAlloc;

#[derive(Parser)]
#[command(name = "davinci", version, about = "Agent-native mid-training of Qwen2.5-architecture models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a checkpoint on token sequences and write its logits (and losses) to safetensors.
    Logits(commands::logits::Args),
    /// Rewrite a checkpoint in the Hugging Face layout: another dtype or shard size.
    Convert(commands::convert::Args),
    /// Print a model's shape and size: a preset, a checkpoint directory or a Hub name.
    Info(commands::info::Args),
    /// Draw a run's loss, learning rate, gradient norm and tokens/s (SVG), or several runs'.
    Plot(commands::plot::Args),
    /// Predict each rank's memory and the step's time of a recipe on a cluster, before
    /// launching it (or of one `bench step` shape, to check against its measurement).
    Plan(commands::plan::Args),
    /// Run a recipe: its stages in order, with checkpoints; run again to resume.
    Train(commands::train::Args),
    /// Start N local ranks of a command, as torchrun does: `launch --nproc 2 -- train R.toml`.
    Launch(commands::launch::Args),
    /// The same as `data prepare`, kept for scripts written before it moved.
    #[command(hide = true)]
    Prepare(commands::data::prepare::Args),
    /// Benchmarks: `bench step` times full training steps, `bench kernels` the fused kernels.
    #[command(subcommand)]
    Bench(commands::bench::Command),
    /// Whether davinci works on this machine and how fast: the GPU, every kernel against
    /// its CPU reference, training steps, NCCL, kernel speed; the emulation without a GPU.
    Doctor(commands::doctor::Args),
    /// Data: prepare shards, plan a recipe's mixtures (stats), show rendered records, mine
    /// PRs from git, train a tokenizer.
    #[command(subcommand)]
    Data(commands::data::Command),
}

fn main() -> Result<()> {
    runtime::tune_for_cpu();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Logits(args) => commands::logits::run(args),
        Command::Convert(args) => commands::convert::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Plan(args) => commands::plan::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Launch(args) => commands::launch::run(args),
        Command::Prepare(args) => commands::data::prepare::run(args),
        Command::Data(command) => commands::data::run(command),
        Command::Bench(command) => commands::bench::run(command),
        Command::Doctor(args) => commands::doctor::run(args),
    }
}
