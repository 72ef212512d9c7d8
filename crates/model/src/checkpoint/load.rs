//! Loading a Hugging Face checkpoint, with errors that name the tensor and the file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::SafeTensors;
use serde::Deserialize;

use super::checksums::{is_plain_file_name, read_checksums, verify_file};
use super::{regular_file, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use crate::config::Config;
use crate::error::{io_at, ModelError, Result};
use crate::model::Qwen2;
use crate::names::{self, LM_HEAD};

/// Loads `dir/config.json` and the weights next to it. With `dtype`, every tensor is
/// converted to it (f32 for training on the CPU); without, tensors keep the stored dtype.
/// Files the directory's `checksums.sha256` lists are verified first.
pub fn load_checkpoint(dir: &Path, device: &Device, dtype: Option<DType>) -> Result<Qwen2> {
    if let Some(sums) = read_checksums(dir)? {
        verify_file(dir, &sums, CONFIG_FILE)?;
    }
    let config = Config::from_file(&dir.join(CONFIG_FILE))?;
    let tensors = load_tensors(dir, &config, device, dtype)?;
    Qwen2::from_tensors(config, tensors)
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// Every tensor that `config` implies, read from the single file or the shards in `dir`,
/// checked for presence and shape, from files verified against the directory's checksums
/// where it has them.
pub fn load_tensors(
    dir: &Path,
    config: &Config,
    device: &Device,
    dtype: Option<DType>,
) -> Result<HashMap<String, Tensor>> {
    let files = WeightFiles::open(dir, config, Verify::Yes)?;
    let mut tensors = HashMap::new();
    for (name, expected) in names::parameter_shapes(config) {
        let (path, view) = files.find_shaped(&name, &expected)?;
        let bad = |e: candle_core::Error| ModelError::BadTensor {
            name: name.clone(),
            path: path.into(),
            message: e.to_string(),
        };
        let mut tensor = view.load(device).map_err(bad)?;
        if let Some(dtype) = dtype {
            tensor = tensor.to_dtype(dtype).map_err(bad)?;
        }
        tensors.insert(name, tensor);
    }
    for name in files.names() {
        let expected = tensors.contains_key(name) || (name == LM_HEAD && config.tie_word_embeddings);
        if !expected {
            tracing::warn!(tensor = name, dir = %dir.display(), "ignoring a tensor the model does not use");
        }
    }
    Ok(tensors)
}

/// Elements `range(name, len)` of every parameter `config` implies (flattened, `len`
/// elements in all), converted to f32 straight from the mapped files: what one FSDP rank
/// needs of a checkpoint, without ever holding the rest. The files are not verified here:
/// every rank reads every file, so the trainer spreads that work over the ranks (each
/// verifies a share of the files with [`super::checksums::verify_file`] first).
pub fn load_slices(
    dir: &Path,
    config: &Config,
    range: impl Fn(&str, usize) -> std::ops::Range<usize>,
) -> Result<Vec<(String, Vec<f32>)>> {
    let files = WeightFiles::open(dir, config, Verify::No)?;
    let mut out = Vec::new();
    for (name, expected) in names::parameter_shapes(config) {
        let (path, view) = files.find_shaped(&name, &expected)?;
        let len: usize = expected.iter().product();
        let wanted = range(&name, len);
        let bad = |message: String| ModelError::BadTensor { name: name.clone(), path: path.into(), message };
        let width = match view.dtype() {
            safetensors::Dtype::F32 => 4,
            safetensors::Dtype::BF16 | safetensors::Dtype::F16 => 2,
            other => return Err(bad(format!("dtype {other:?} cannot be trained from"))),
        };
        let bytes = view
            .data()
            .get(wanted.start * width..wanted.end * width)
            .ok_or_else(|| bad(format!("elements {wanted:?} are outside its {len}")))?;
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => {
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            safetensors::Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
        };
        out.push((name, values));
    }
    Ok(out)
}

/// The memory-mapped safetensors files of a checkpoint and which tensor lives where.
struct WeightFiles {
    /// Parsed files, each with its path; parsing validates header and length.
    files: Vec<(PathBuf, SafeTensors<'static>)>,
    /// Tensor name -> index into `files`.
    location: HashMap<String, usize>,
    /// Where a missing tensor was looked for: the index file or the single file.
    listing: PathBuf,
    _maps: Vec<Mmap>,
}

#[derive(PartialEq)]
enum Verify {
    Yes,
    No,
}

impl WeightFiles {
    /// Maps the weight files of `dir`. The index may name only plain files of `dir` itself
    /// (a path elsewhere, or a FIFO that would block forever, is refused), and `config` must
    /// describe the layers the files hold before anything is allocated for it.
    fn open(dir: &Path, config: &Config, verify: Verify) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        let single_path = dir.join(SINGLE_FILE);
        let (listing, file_names, by_file): (PathBuf, Vec<String>, Option<BTreeMap<String, String>>) =
            if index_path.is_file() {
                let text = std::fs::read_to_string(&index_path).map_err(io_at(&index_path))?;
                let index: IndexFile = serde_json::from_str(&text)
                    .map_err(|e| ModelError::Index { path: index_path.clone(), message: e.to_string() })?;
                let mut files: Vec<String> = index.weight_map.values().cloned().collect();
                files.sort();
                files.dedup();
                if let Some(bad) = files.iter().find(|f| !is_plain_file_name(f)) {
                    return Err(ModelError::Index {
                        path: index_path,
                        message: format!("`{bad}` is not a file name in the checkpoint's own directory"),
                    });
                }
                (index_path, files, Some(index.weight_map))
            } else if single_path.is_file() {
                (single_path, vec![SINGLE_FILE.to_string()], None)
            } else {
                return Err(ModelError::Io {
                    path: dir.into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no {SINGLE_FILE} nor {INDEX_FILE} in the directory"),
                    ),
                });
            };
        let sums = match verify {
            Verify::Yes => read_checksums(dir)?,
            Verify::No => None,
        };
        if let (Some(sums), true) = (&sums, by_file.is_some()) {
            verify_file(dir, sums, INDEX_FILE)?;
        }
        let mut maps = Vec::new();
        let mut files = Vec::new();
        for name in &file_names {
            let path = dir.join(name);
            regular_file(&path)?;
            if let Some(sums) = &sums {
                verify_file(dir, sums, name)?;
            }
            let file = File::open(&path).map_err(io_at(&path))?;
            // SAFETY: the map is read-only and kept alive as long as the views into it; a
            // checkpoint modified while it is being loaded is outside what we can defend.
            let map = unsafe { Mmap::map(&file) }.map_err(io_at(&path))?;
            // SAFETY: the bytes live in `map`, which `_maps` keeps for as long as `files`.
            let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
            let parsed = SafeTensors::deserialize(bytes)
                .map_err(|e| ModelError::CorruptFile { path: path.clone(), message: e.to_string() })?;
            maps.push(map);
            files.push((path, parsed));
        }
        let mut location = HashMap::new();
        match by_file {
            Some(weight_map) => {
                for (tensor, file) in weight_map {
                    let i = file_names.iter().position(|f| *f == file).unwrap_or(0);
                    location.insert(tensor, i);
                }
            }
            None => {
                for name in files[0].1.names() {
                    location.insert(name.to_string(), 0);
                }
            }
        }
        let files = Self { files, location, listing, _maps: maps };
        files.check_layers(config)?;
        Ok(files)
    }

    /// The config's layer count against the layers the files hold: a config that claims
    /// 10^8 layers would otherwise build 10^9 tensor names before the first is missed.
    fn check_layers(&self, config: &Config) -> Result<()> {
        let held = self
            .names()
            .filter_map(|n| n.strip_prefix("model.layers.")?.split('.').next()?.parse::<usize>().ok())
            .map(|layer| layer + 1)
            .max()
            .unwrap_or(0);
        if held != config.num_hidden_layers {
            return Err(ModelError::Config {
                path: self.listing.clone(),
                message: format!(
                    "config.json says num_hidden_layers = {} but the weights hold {held} layer(s)",
                    config.num_hidden_layers
                ),
            });
        }
        Ok(())
    }

    fn find(&self, name: &str) -> Result<(&Path, safetensors::tensor::TensorView<'static>)> {
        let Some(&i) = self.location.get(name) else {
            return Err(ModelError::MissingTensor { name: name.into(), path: self.listing.clone() });
        };
        let (path, file) = &self.files[i];
        let view = file
            .tensor(name)
            .map_err(|_| ModelError::MissingTensor { name: name.into(), path: path.clone() })?;
        Ok((path, view))
    }

    /// [`WeightFiles::find`], refusing a tensor of another shape than `expected`.
    fn find_shaped(
        &self,
        name: &str,
        expected: &[usize],
    ) -> Result<(&Path, safetensors::tensor::TensorView<'static>)> {
        let (path, view) = self.find(name)?;
        if view.shape() != expected {
            return Err(ModelError::ShapeMismatch {
                name: name.into(),
                path: path.into(),
                expected: expected.to_vec(),
                actual: view.shape().to_vec(),
            });
        }
        Ok((path, view))
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.location.keys().map(String::as_str)
    }
}
