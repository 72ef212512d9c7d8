//! `davinci data ...`: tools around the data pipeline.

use std::path::PathBuf;

use std::io::Write;

use anyhow::{Context, Result};
use davinci_data::mine_git::{mine_git, MineOptions};
use davinci_data::train_tokenizer::train_bpe_tokenizer;

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
