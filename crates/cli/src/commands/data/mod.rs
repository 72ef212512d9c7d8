//! `davinci data ...`: the data pipeline's commands: prepare shards, plan a recipe's
//! mixtures, show rendered records, mine PRs from git, train a tokenizer.

pub mod prepare;
mod stats;

use std::path::PathBuf;

use anyhow::{Context, Result};
use davinci_data::input::RecordReader;
use davinci_data::jsonl::write_jsonl;
use davinci_data::mine_git::{mine_git, MineOptions};
use davinci_data::prepare::render_record;
use davinci_data::render::{ChatMlOptions, Template, ToolStyle};
use davinci_data::train_tokenizer::train_bpe_tokenizer;

use crate::args::parse_named;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Turn PR records and agent trajectories into tokenized shards (a recipe's datasets,
    /// or one dataset from flags).
    Prepare(prepare::Args),
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
        /// owner/name to record (default: from the origin remote, which must then be a
        /// GitHub URL).
        #[arg(long)]
        repo_name: Option<String>,
        /// owner/name of the repository this one is a fork of, recorded so that
        /// decontamination can drop a fork of an excluded repository.
        #[arg(long)]
        upstream: Option<String>,
        /// Leave out files larger than this many bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_file_bytes: u64,
    },
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Prepare(args) => prepare::run(args)?,
        Command::TrainTokenizer { files, vocab_size, out } => {
            let tokenizer = train_bpe_tokenizer(&files, vocab_size, &out)?;
            println!("wrote {} ({} tokens)", out.display(), tokenizer.get_vocab_size(true));
        }
        Command::Stats { recipe, stage, world_size, data_dir, verify } => {
            stats::run(&recipe, stage.as_deref(), world_size, data_dir, verify)?
        }
        Command::Show { file, template, tool_style, count, skip } => {
            let template: Template = parse_named("template", &template)?;
            let tool_style: ToolStyle = parse_named("tool style", &tool_style)?;
            let mut reader = RecordReader::open(&file)?;
            let mut shown = 0;
            while let Some((line, text)) = reader.next_record()? {
                if line <= skip {
                    continue;
                }
                let at = || format!("{}:{line}", file.display());
                let text = text.map_err(anyhow::Error::msg).with_context(at)?;
                let rendered =
                    render_record(template, ChatMlOptions { tool_style, ..Default::default() }, &text)
                        .with_context(at)?;
                println!("{rendered}");
                shown += 1;
                if shown == count {
                    break;
                }
            }
        }
        Command::MineGit { repo, out, rev, repo_name, upstream, max_file_bytes } => {
            let options = MineOptions { rev, repo_name, upstream, max_file_bytes };
            let (prs, report) = mine_git(&repo, &options)?;
            write_jsonl(&out, &prs)?;
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
