//! `davinci data ...`: tools around the data pipeline.

use std::path::PathBuf;

use std::io::Write;

use anyhow::{Context, Result};
use davinci_data::input::RecordReader;
use davinci_data::loader::{Loader, LoaderState};
use davinci_data::mine_git::{mine_git, MineOptions};
use davinci_data::prepare::render_record;
use davinci_data::render::{ChatMlOptions, Template, ToolStyle};
use davinci_data::tokenize::TextTokenizer;
use davinci_data::train_tokenizer::train_bpe_tokenizer;
use davinci_train::trainer::open_mixture;
use davinci_train::Recipe;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Train a byte-level BPE tokenizer (Qwen2.5's layout and special tokens) on text files.
    TrainTokenizer {
        /// Text files to learn from.
        files: Vec<PathBuf>,
        #[arg(long, default_value_t = 2048)]
        vocab_size: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Plan each stage's mixture from the shard indexes: documents, rows per epoch, tokens,
    /// padding, split or dropped documents and each dataset's effective token share.
    Stats {
        /// The recipe; its datasets must have been prepared (`davinci prepare`).
        recipe: PathBuf,
        /// Only this stage.
        #[arg(long)]
        stage: Option<String>,
        /// Ranks the rows are shared among.
        #[arg(long, default_value_t = 1)]
        world_size: usize,
        /// Read the prepared datasets from here instead of the recipe's data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also check every shard's SHA-256 against its manifest (reads all the data).
        #[arg(long)]
        verify: bool,
    },
    /// Print records as a template renders them (special tokens spelled out): what the model sees.
    Show {
        /// A record file (JSONL, .gz, .zst, .traj).
        file: PathBuf,
        /// pr-general, pr-python, chatml or text.
        #[arg(long)]
        template: String,
        /// ChatML tool style: qwen or xml-function.
        #[arg(long, default_value = "qwen")]
        tool_style: String,
        /// How many records to show.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Records to skip first.
        #[arg(long, default_value_t = 0)]
        skip: usize,
    },
    /// Build PR records (JSONL) from a local git repository's merge and squash-merge commits.
    MineGit {
        /// Path of the repository.
        repo: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Branch or revision whose first-parent history is read.
        #[arg(long, default_value = "HEAD")]
        rev: String,
        /// owner/name to record (default: from the origin remote).
        #[arg(long)]
        repo_name: Option<String>,
        /// Leave out files larger than this many bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_file_bytes: u64,
    },
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::TrainTokenizer { files, vocab_size, out } => {
            let tokenizer = train_bpe_tokenizer(&files, vocab_size, &out)?;
            println!("wrote {} ({} tokens)", out.display(), tokenizer.get_vocab_size(true));
        }
        Command::Stats { recipe, stage, world_size, data_dir, verify } => {
            stats(&recipe, stage.as_deref(), world_size, data_dir, verify)?
        }
        Command::Show { file, template, tool_style, count, skip } => {
            let template: Template = serde_json::from_value(serde_json::Value::String(template.clone()))
                .with_context(|| format!("unknown template `{template}`"))?;
            let tool_style: ToolStyle = serde_json::from_value(serde_json::Value::String(tool_style.clone()))
                .with_context(|| format!("unknown tool style `{tool_style}`"))?;
            let mut reader = RecordReader::open(&file)?;
            let mut shown = 0;
            while let Some((line, text)) = reader.next_record()? {
                if line <= skip {
                    continue;
                }
                let rendered =
                    render_record(template, ChatMlOptions { tool_style, ..Default::default() }, &text)
                        .with_context(|| format!("{}:{line}", file.display()))?;
                println!("{rendered}");
                shown += 1;
                if shown == count {
                    break;
                }
            }
        }
        Command::MineGit { repo, out, rev, repo_name, max_file_bytes } => {
            let options = MineOptions { rev, repo_name, max_file_bytes };
            let (prs, report) = mine_git(&repo, &options)?;
            let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
            );
            for pr in &prs {
                serde_json::to_writer(&mut file, pr)?;
                file.write_all(b"\n")?;
            }
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: {} commits scanned, {} merged PRs, {} squash-merged PRs -> {}",
                repo.display(),
                report.commits_scanned,
                report.merge_prs,
                report.squash_prs,
                out.display()
            );
            for (reason, count) in &report.skipped {
                println!("  files skipped, {reason}: {count}");
            }
        }
    }
    Ok(())
}

fn stats(
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
