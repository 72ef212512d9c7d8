//! `davinci data stats`: each stage's mixture planned from the shard indexes, before any
//! training: documents, rows, padding, splits and each dataset's effective share, and how
//! evenly context parallelism would divide its rows.

use std::path::PathBuf;

use anyhow::Result;
use davinci_data::loader::{Loader, LoaderState};
use davinci_data::tokenize::TextTokenizer;
use davinci_model::ContextSplit;
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
            "  {} documents, {} pieces, {} rows per epoch ({} per data-parallel rank at world size {world}), {} tokens, padding {:.2}%",
            s.documents,
            s.pieces,
            s.rows,
            s.rows / stage.data_ranks(world.max(1)).max(1) as u64,
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
        context_balance(&loader, stage.context_parallel);
    }
    Ok(())
}

/// For the stage's context degree and a few others, the busiest rank's share of each row's
/// tokens and attention work (an even share is 1/N): the mean over the epoch's rows and
/// the worst row.
fn context_balance(loader: &Loader, stage_degree: usize) {
    let mut degrees = vec![stage_degree, 2, 4, 8];
    degrees.sort_unstable();
    degrees.dedup();
    degrees.retain(|&n| n > 1);
    let rows: Vec<Vec<u32>> = loader.epoch_row_bounds(0).collect();
    if rows.is_empty() {
        return;
    }
    println!("  context parallelism, the busiest rank's share of a row (mean over rows; worst row):");
    for n in degrees {
        let (mut tokens, mut work) = ((0.0, 0.0f64), (0.0, 0.0f64));
        for cu in &rows {
            let balance = ContextSplit::new(cu, n).balance();
            tokens = (tokens.0 + balance.tokens, tokens.1.max(balance.tokens));
            work = (work.0 + balance.work, work.1.max(balance.work));
        }
        let count = rows.len() as f64;
        let marker = if n == stage_degree { "  (the stage's)" } else { "" };
        println!(
            "    N = {n}: tokens {:.2}% ({:.2}%), attention work {:.2}% ({:.2}%); even {:.2}%{marker}",
            100.0 * tokens.0 / count,
            100.0 * tokens.1,
            100.0 * work.0 / count,
            100.0 * work.1,
            100.0 / n as f64
        );
    }
}
