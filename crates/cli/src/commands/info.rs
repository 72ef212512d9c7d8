//! `davinci info`: a model's shape and size, before spending anything on it; with
//! `--verify`, whether a checkpoint's files still hold the bytes that were written.

use std::path::Path;

use anyhow::{bail, Context, Result};
use davinci_model::checkpoint::checksums::verify_dir;
use davinci_train::human;

#[derive(clap::Args)]
pub struct Args {
    /// A preset (tiny, qwen2.5-0.5b ... qwen2.5-72b), a checkpoint directory or a Hub name.
    model: String,
    /// Check every file of the checkpoint directory against its `checksums.sha256`.
    #[arg(long)]
    verify: bool,
    /// Print the model's `config.json` as transformers reads it (what a comparison with
    /// another framework builds its model from) instead of the summary.
    #[arg(long)]
    config_json: bool,
    /// With `--config-json`: override the number of layers, as `bench step --layers` does.
    #[arg(long, requires = "config_json")]
    layers: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    if args.verify {
        verify(Path::new(&args.model))?;
    }
    let config = super::bench::model_config(&args.model, args.layers)?;
    if args.config_json {
        println!("{}", config.to_json());
        return Ok(());
    }
    let params = config.num_parameters();
    println!(
        "layers {}, hidden {}, intermediate {}",
        config.num_hidden_layers, config.hidden_size, config.intermediate_size
    );
    println!(
        "attention: {} query heads, {} key/value heads, head dim {}",
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim()
    );
    println!(
        "vocabulary {}, tied head: {}, rope theta {}",
        config.vocab_size, config.tie_word_embeddings, config.rope_theta
    );
    println!("parameters: {params} ({})", human::count(params as u64));
    println!("bf16 weights: {}", human::bytes(params as u64 * 2));
    Ok(())
}

fn verify(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("--verify needs a checkpoint directory; {} is not one", dir.display());
    }
    let report = verify_dir(dir).with_context(|| format!("verifying {}", dir.display()))?;
    let bytes: u64 = report.verified.iter().filter_map(|p| p.metadata().ok()).map(|m| m.len()).sum();
    println!(
        "{}: {} files ({}) match their checksums",
        dir.display(),
        report.verified.len(),
        human::bytes(bytes)
    );
    for path in &report.unlisted {
        println!("not covered by the checksums (added later?): {}", path.display());
    }
    Ok(())
}
