//! `davinci`: the command line of the davinci training framework.

mod commands;
mod device;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    /// Turn PR records and agent trajectories into tokenized shards.
    Prepare(commands::prepare::Args),
    /// Data tools: tokenizer training.
    #[command(subcommand)]
    Data(commands::data::Command),
}

fn main() -> Result<()> {
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
        Command::Prepare(args) => commands::prepare::run(args),
        Command::Data(command) => commands::data::run(command),
    }
}
