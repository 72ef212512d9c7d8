//! Saving a checkpoint in the Hugging Face layout, atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Tensor};

use super::{is_weights_file, shard_file_name, write_dir_atomically, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use crate::config::Config;
use crate::error::{io_at, ModelError, Result};
use crate::model::Qwen2;

/// How a checkpoint is written.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Largest shard in bytes; a model above it is split into
    /// `model-0000k-of-0000n.safetensors` files with an index, as transformers does.
    pub max_shard_bytes: u64,
    /// The dtype tensors are stored in; `None` keeps each tensor's own.
    pub dtype: Option<DType>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        // transformers' default `max_shard_size` is "5GB".
        Self { max_shard_bytes: 5_000_000_000, dtype: None }
    }
}

/// Writes `model` to `dir` (see [`save_tensors`]).
pub fn save_checkpoint(model: &Qwen2, dir: &Path, options: &SaveOptions) -> Result<()> {
    save_tensors(model.config(), &model.named_tensors(), dir, options)
}

/// Writes `config.json` and the named tensors to `dir` in the Hugging Face layout. The
/// directory appears complete or not at all; files in an existing `dir` other than
/// weights and config (a tokenizer, say) are kept.
pub fn save_tensors(
    config: &Config,
    tensors: &[(String, Tensor)],
    dir: &Path,
    options: &SaveOptions,
) -> Result<()> {
    write_dir_atomically(
        dir,
        |name| !is_weights_file(name),
        |tmp| write_weights(tmp, config, tensors, options),
    )
}

/// Writes `config.json` and the weights into an existing directory, with no atomicity of
/// its own: for callers that assemble a larger directory inside
/// [`write_dir_atomically`] (a training checkpoint adds its optimizer state).
pub fn write_weights(
    dir: &Path,
    config: &Config,
    tensors: &[(String, Tensor)],
    options: &SaveOptions,
) -> Result<()> {
    let mut stored = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let tensor = match options.dtype {
            Some(dtype) => tensor.to_dtype(dtype)?,
            None => tensor.clone(),
        };
        stored.push((name.clone(), tensor.detach().contiguous()?));
    }
    let mut config = config.clone();
    if let Some((_, first)) = stored.first() {
        config.torch_dtype = torch_dtype_name(first.dtype()).to_string();
    }
    let shards = split_into_shards(&stored, options.max_shard_bytes);
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, config.to_json()).map_err(io_at(&config_path))?;
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file_name = if count == 1 { SINGLE_FILE.to_string() } else { shard_file_name(i + 1, count) };
        let path = dir.join(&file_name);
        let views = shard.iter().map(|(name, tensor)| (name.as_str(), tensor));
        safetensors::serialize_to_file(views, Some(metadata.clone()), &path).map_err(|e| ModelError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        for (name, _) in shard.iter() {
            weight_map.insert(name.clone(), file_name.clone());
        }
    }
    if count > 1 {
        let total: usize = stored.iter().map(|(_, t)| byte_size(t)).sum();
        let index = serde_json::json!({
            "metadata": { "total_size": total },
            "weight_map": weight_map,
        });
        let path = dir.join(INDEX_FILE);
        let text = serde_json::to_string_pretty(&index).unwrap_or_default();
        std::fs::write(&path, text).map_err(io_at(&path))?;
    }
    Ok(())
}

fn byte_size(tensor: &Tensor) -> usize {
    tensor.elem_count() * tensor.dtype().size_in_bytes()
}

/// Consecutive groups of tensors, each at most `max_bytes` unless one tensor alone is larger.
fn split_into_shards(tensors: &[(String, Tensor)], max_bytes: u64) -> Vec<Vec<(String, Tensor)>> {
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
    let mut current = 0u64;
    for (name, tensor) in tensors {
        let size = byte_size(tensor) as u64;
        let last = shards.len() - 1;
        if !shards[last].is_empty() && current + size > max_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        current += size;
        let last = shards.len() - 1;
        shards[last].push((name.clone(), tensor.clone()));
    }
    shards
}

/// The name transformers uses for a dtype in `config.json`.
pub fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    }
}
