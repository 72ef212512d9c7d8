//! `davinci bench`: training steps and the fused kernels, timed on the chosen device.

pub mod kernels;
mod step;

use davinci_model::Config;

/// A preset's config, or the `config.json` of a checkpoint directory or Hub name, with the
/// layer count overridden when asked (a big model's shape on a small machine).
pub fn model_config(model: &str, layers: Option<usize>) -> anyhow::Result<Config> {
    let mut config = Config::resolve(model)?;
    if let Some(layers) = layers {
        config.num_hidden_layers = layers;
    }
    Ok(config)
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Time full training steps of a model on random tokens.
    Step(step::StepArgs),
    /// Time each fused kernel at a model's shapes, with bytes moved, GB/s, the fraction of
    /// a plain copy's bandwidth measured in the same run, and the speedup over the same
    /// op written with unfused candle primitives.
    Kernels(kernels::KernelArgs),
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Step(args) => step::run(args),
        Command::Kernels(args) => kernels::run(args),
    }
}
