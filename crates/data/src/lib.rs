//! Agent-native training data: the records (pull requests, agent trajectories, plain text),
//! the templates that render them, the filters, tokenization, and the shard format the
//! loader streams.

pub mod dataset;
pub mod error;
pub mod filter;
pub mod input;
pub mod jsonl;
pub mod loader;
pub mod mine_git;
pub mod prepare;
pub mod records;
pub mod render;
pub mod rendered;
pub mod shard;
pub mod staleness;
pub mod tokenize;
pub mod train_tokenizer;

pub use error::{DataError, Result};
