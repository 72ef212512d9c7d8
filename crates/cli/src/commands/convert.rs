//! `davinci convert`: rewrite a checkpoint in another dtype or shard size.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use davinci_model::{load_checkpoint, resolve_model_dir, save_checkpoint, SaveOptions};

use crate::args::parse_dtype;

#[derive(clap::Args)]
pub struct Args {
    /// Source checkpoint directory or Hub name.
    #[arg(long)]
    model: String,
    /// Destination directory (written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Stored dtype: f32, bf16 or f16 (default: the source's).
    #[arg(long)]
    dtype: Option<String>,
    /// Largest shard in bytes before splitting into model-0000k-of-0000n files.
    #[arg(long, default_value_t = 5_000_000_000)]
    max_shard_bytes: u64,
}

pub fn run(args: Args) -> Result<()> {
    let dtype = args.dtype.as_deref().map(parse_dtype).transpose()?;
    let dir = resolve_model_dir(&args.model)?;
    let model =
        load_checkpoint(&dir, &Device::Cpu, dtype).with_context(|| format!("loading {}", dir.display()))?;
    let options = SaveOptions { max_shard_bytes: args.max_shard_bytes, dtype };
    save_checkpoint(&model, &args.out, &options)
        .with_context(|| format!("saving to {}", args.out.display()))?;
    println!(
        "saved {} ({} parameters) to {}",
        dir.display(),
        model.config().num_parameters(),
        args.out.display()
    );
    Ok(())
}
