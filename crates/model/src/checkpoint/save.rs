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
    let layout: Vec<(String, Vec<usize>, DType)> =
        tensors.iter().map(|(name, t)| (name.clone(), t.dims().to_vec(), t.dtype())).collect();
    let mut writer = WeightsWriter::new(dir, config, &layout, options)?;
    for (name, tensor) in tensors {
        writer.push(name, tensor)?;
    }
    writer.finish()
}

/// Writes a checkpoint's weight files one by one as their tensors arrive, in the order
/// announced up front, holding no more than one file's tensors: a trainer gathering a
/// 72B model unit by unit never has the whole of it in memory. The split into files (and
/// so the index) depends only on the names, shapes and dtypes, known before any value.
pub struct WeightsWriter {
    dir: std::path::PathBuf,
    /// Per file: its name and the tensors it holds, in order.
    files: Vec<(String, Vec<String>)>,
    dtype: Option<DType>,
    /// The file being filled, and the tensors it has so far.
    next_file: usize,
    pending: Vec<(String, Tensor)>,
}

impl WeightsWriter {
    /// Plans the files for tensors `(name, shape, dtype)` in this order, and writes
    /// `config.json` and, for more than one file, the index.
    pub fn new(
        dir: &Path,
        config: &Config,
        layout: &[(String, Vec<usize>, DType)],
        options: &SaveOptions,
    ) -> Result<Self> {
        let stored = |dtype: DType| options.dtype.unwrap_or(dtype);
        let sizes: Vec<(String, u64)> = layout
            .iter()
            .map(|(name, shape, dtype)| {
                (name.clone(), (shape.iter().product::<usize>() * stored(*dtype).size_in_bytes()) as u64)
            })
            .collect();
        let groups = split_into_files(&sizes, options.max_shard_bytes);
        let count = groups.len();
        let files: Vec<(String, Vec<String>)> = groups
            .into_iter()
            .enumerate()
            .map(|(i, names)| {
                (if count == 1 { SINGLE_FILE.to_string() } else { shard_file_name(i + 1, count) }, names)
            })
            .collect();
        let mut config = config.clone();
        if let Some((_, _, dtype)) = layout.first() {
            config.torch_dtype = torch_dtype_name(stored(*dtype)).to_string();
        }
        let config_path = dir.join(CONFIG_FILE);
        std::fs::write(&config_path, config.to_json()).map_err(io_at(&config_path))?;
        if count > 1 {
            let weight_map: BTreeMap<&str, &str> = files
                .iter()
                .flat_map(|(file, names)| names.iter().map(move |n| (n.as_str(), file.as_str())))
                .collect();
            let total: u64 = sizes.iter().map(|(_, b)| b).sum();
            let index = serde_json::json!({
                "metadata": { "total_size": total },
                "weight_map": weight_map,
            });
            let path = dir.join(INDEX_FILE);
            let text = serde_json::to_string_pretty(&index).unwrap_or_default();
            std::fs::write(&path, text).map_err(io_at(&path))?;
        }
        Ok(Self { dir: dir.to_path_buf(), files, dtype: options.dtype, next_file: 0, pending: Vec::new() })
    }

    /// The next tensor, which must be the one announced next; a file is written as soon
    /// as its last tensor arrives.
    pub fn push(&mut self, name: &str, tensor: &Tensor) -> Result<()> {
        let expected = self.files.get(self.next_file).and_then(|(_, names)| names.get(self.pending.len()));
        if expected.map(String::as_str) != Some(name) {
            return Err(ModelError::BadTensor {
                name: name.to_string(),
                path: self.dir.clone(),
                message: format!(
                    "written out of order: `{}` was announced next",
                    expected.map(String::as_str).unwrap_or("nothing more")
                ),
            });
        }
        let tensor = match self.dtype {
            Some(dtype) => tensor.to_dtype(dtype)?,
            None => tensor.clone(),
        };
        self.pending.push((name.to_string(), tensor.detach().contiguous()?));
        let (file, names) = &self.files[self.next_file];
        if self.pending.len() == names.len() {
            let path = self.dir.join(file);
            let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
            let views = self.pending.iter().map(|(name, tensor)| (name.as_str(), tensor));
            safetensors::serialize_to_file(views, Some(metadata), &path).map_err(|e| ModelError::Io {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            self.pending.clear();
            self.next_file += 1;
        }
        Ok(())
    }

    /// Checks that every announced tensor was written.
    pub fn finish(self) -> Result<()> {
        match self.files.get(self.next_file) {
            None => Ok(()),
            Some((file, names)) => Err(ModelError::MissingTensor {
                name: names[self.pending.len()].clone(),
                path: self.dir.join(file),
            }),
        }
    }
}

/// Consecutive groups of tensors `(name, bytes)`, each at most `max_bytes` unless one
/// tensor alone is larger.
fn split_into_files(tensors: &[(String, u64)], max_bytes: u64) -> Vec<Vec<String>> {
    let mut files: Vec<Vec<String>> = vec![Vec::new()];
    let mut current = 0u64;
    for (name, size) in tensors {
        let last = files.len() - 1;
        if !files[last].is_empty() && current + size > max_bytes {
            files.push(Vec::new());
            current = 0;
        }
        current += size;
        let last = files.len() - 1;
        files[last].push(name.clone());
    }
    files
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
