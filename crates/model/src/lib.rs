//! A Qwen2.5-architecture causal language model on candle, written for training: packed
//! variable-length rows, a layer callable on its own, a chunked loss, every op with a
//! backward, and Hugging Face checkpoints in and out.

pub mod checkpoint;
pub mod config;
pub mod context;
pub mod error;
pub mod init;
pub mod layer;
pub mod layerwise;
pub mod model;
pub mod names;
pub mod ops;
pub mod packing;

pub use checkpoint::{load_checkpoint, resolve_model_dir, save_checkpoint, save_tensors, SaveOptions};
pub use config::{Config, PRESETS};
pub use context::{ContextSplit, KeyValueExchange};
pub use error::{ModelError, Result};
pub use layer::DecoderLayer;
pub use layerwise::{Unit, WeightSource};
pub use model::Qwen2;
pub use packing::PackedLayout;
