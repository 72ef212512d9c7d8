//! `davinci data ...`: tools around the data pipeline.

use std::path::PathBuf;

use anyhow::Result;
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
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::TrainTokenizer { files, vocab_size, out } => {
            let tokenizer = train_bpe_tokenizer(&files, vocab_size, &out)?;
            println!("wrote {} ({} tokens)", out.display(), tokenizer.get_vocab_size(true));
        }
    }
    Ok(())
}
