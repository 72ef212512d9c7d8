//! `davinci data stats`: each stage's mixture planned from the shard indexes, before any
//! training: documents, rows, padding, splits and each dataset's effective share.

use std::path::PathBuf;

use anyhow::Result;
use davinci_data::loader::{Loader, LoaderState};
use davinci_data::tokenize::TextTokenizer;
use davinci_train::trainer::open_mixture;
use davinci_train::Recipe;

pub fn run(
    path: &std::path::Path,
    only: Option<&str>,
    world: usize,
    data_dir: Option<PathBuf>,
    verify: bool,
) -> Result<()> {
    let mut recipe = Recipe::from_file(path)?;
    if let Some(dir) = data_dir {
        recipe.data_dir = std::env::current_dir()?.join(dir);
    }
    if let Some(name) = only {
        if !recipe.stages.iter().any(|s| s.name == name) {
            anyhow::bail!("{}: no stage named `{name}`", path.display());
        }
    }
    let tokenizer = TextTokenizer::load(&recipe.tokenizer_source())?;
    for stage in recipe.stages.iter().filter(|s| only.is_none_or(|n| n == s.name)) {
        let entries = open_mixture(&recipe, stage, &tokenizer)?;
        if verify {
            for entry in &entries {
                entry.dataset.verify()?;
            }
        }
        let config = recipe.stage_loader(stage, &tokenizer);
        let loader = Loader::new(entries, config, LoaderState::default())?;
        let s = loader.epoch_stats(0);
        println!("stage {} (seq_len {}):", stage.name, stage.seq_len);
        println!(
            "  {} documents, {} pieces, {} rows per epoch ({} per rank at world size {world}), {} tokens, padding {:.2}%",
            s.documents,
            s.pieces,
            s.rows,
            s.rows / world.max(1) as u64,
            s.tokens,
            100.0 * s.padding_fraction
        );
        println!(
            "  documents longer than seq_len: {} split, {} dropped",
            s.split_documents, s.dropped_documents
        );
        for (i, item) in stage.mixture.iter().enumerate() {
            println!(
                "  {:<24} upsample {:>4}: {:>12} tokens, {:>6.2}% of the stage",
                item.dataset,
                item.upsample,
                s.tokens_per_source[i],
                100.0 * s.share_per_source[i]
            );
        }
    }
    Ok(())
}
