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

/// The shape of one training step: what `bench step` runs and `plan --model` predicts.
#[derive(clap::Args)]
pub struct StepShapeArgs {
    #[arg(long, default_value_t = 2048)]
    pub seq_len: usize,
    /// Override the number of layers (to fit a big model's shape on a small machine).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Documents packed into the row (equal lengths).
    #[arg(long, default_value_t = 1)]
    pub docs: usize,
    /// Ranks (threads of this process, FSDP over the in-process backend); each context
    /// group of them has a row.
    #[arg(long, default_value_t = 1)]
    pub world: usize,
    /// Ranks that share each row (context parallelism); must divide `--world`.
    #[arg(long, default_value_t = 1)]
    pub context: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl StepShapeArgs {
    /// Refuses a row that cannot hold its documents and a context degree that does not
    /// divide the world.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.seq_len == 0 || self.docs == 0 || self.docs > self.seq_len {
            anyhow::bail!("need 0 < docs <= seq_len");
        }
        if self.context == 0 || !self.world().is_multiple_of(self.context) {
            anyhow::bail!("--context {} must divide --world {}", self.context, self.world);
        }
        Ok(())
    }

    pub fn world(&self) -> usize {
        self.world.max(1)
    }

    /// The lengths of the row's equal documents, the first taking the remainder.
    pub fn doc_lengths(&self) -> Vec<usize> {
        let base = self.seq_len / self.docs;
        let mut docs = vec![base; self.docs];
        docs[0] += self.seq_len - base * self.docs;
        docs
    }
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
