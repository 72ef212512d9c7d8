//! Hugging Face checkpoints: `config.json` plus `model.safetensors`, or
//! `model-0000k-of-0000n.safetensors` shards with `model.safetensors.index.json`, under
//! transformers' tensor names, so that transformers and vLLM load them as they are.

mod atomic;
pub mod checksums;
mod hub;
mod load;
mod save;

pub use atomic::write_dir_atomically;
pub use hub::resolve_model_dir;
pub use load::{load_checkpoint, load_slices, load_tensors};
pub use save::{save_checkpoint, save_tensors, write_weights, SaveOptions, WeightsWriter};

pub const CONFIG_FILE: &str = "config.json";
pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The file name of shard `index` (from 1) of `count`, as transformers names them.
pub fn shard_file_name(index: usize, count: usize) -> String {
    format!("model-{index:05}-of-{count:05}.safetensors")
}

/// Refuses a path that is not a regular file (links followed: the Hub's cache links to
/// blobs): a FIFO or a device named in a checkpoint would block a read or never end it.
fn regular_file(path: &std::path::Path) -> crate::error::Result<()> {
    let meta = std::fs::metadata(path).map_err(crate::error::io_at(path))?;
    if !meta.is_file() {
        return Err(crate::error::ModelError::CorruptFile {
            path: path.into(),
            message: "not a regular file".into(),
        });
    }
    Ok(())
}

/// Whether a file in a model directory is one that saving a checkpoint writes.
fn is_weights_file(name: &str) -> bool {
    name == CONFIG_FILE || name == INDEX_FILE || (name.starts_with("model") && name.ends_with(".safetensors"))
}
