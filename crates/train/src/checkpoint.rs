//! Training checkpoints: the weights in Hugging Face layout (loadable by `davinci logits`
//! and transformers), the optimizer's fp32 state in safetensors, and `trainer_state.json`.
//! Written into a temporary directory and renamed, so a crash mid-write never leaves a
//! directory that looks complete; older checkpoints are pruned only after a new one is.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use davinci_data::loader::LoaderState;
use davinci_model::checkpoint::checksums::{read_checksums, record_checksum, verify_file};
use davinci_model::checkpoint::{write_dir_atomically, WeightsWriter, CONFIG_FILE};
use davinci_model::error::io_at;
use davinci_model::names::parameter_shapes;
use davinci_model::{Config, SaveOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optimizer::{AdamW, AdamWConfig, ParamState};
use crate::sharded::{units, ShardedModel};

pub const STATE_FILE: &str = "trainer_state.json";

/// Where a run is: enough to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub stage: String,
    pub stage_index: usize,
    /// Optimizer steps taken in this stage.
    pub step: u64,
    pub tokens_seen: u64,
    pub loader: LoaderState,
    /// The recipe's parts that must not change across a resume, hashed (see
    /// [`crate::recipe::Recipe::fingerprint`]).
    pub recipe: BTreeMap<String, String>,
    /// Wall-clock seconds the stage has run, over all its invocations.
    #[serde(default)]
    pub elapsed_seconds: f64,
}

/// The directory of the checkpoint after `step` steps of a stage.
pub fn checkpoint_dir(root: &Path, stage: &str, step: u64) -> PathBuf {
    root.join(stage).join(format!("step-{step:08}"))
}

/// This rank's optimizer file in a checkpoint.
pub fn optimizer_file(rank: usize, world: usize) -> String {
    format!("optimizer-{rank:05}-of-{world:05}.safetensors")
}

/// Writes a checkpoint into `dir`, every rank together: the weights gathered unit by unit
/// from the fp32 master shards and streamed by rank 0 into the HF files in
/// `weights_dtype` (so no rank ever holds the whole model), each rank's optimizer shards
/// in a file of its own, and the state. Everything goes into a temporary directory that
/// rank 0 renames once all ranks are done.
pub fn save(
    dir: &Path,
    config: &Config,
    model: &ShardedModel,
    state: &TrainerState,
    weights_dtype: DType,
) -> Result<()> {
    let collective = model.collective().as_ref();
    let (rank, world) = (collective.rank(), collective.world());
    let units = units(config, world);
    let optimizer = model.host_state()?;
    let write_shard = |tmp: &Path| -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for p in &optimizer.params {
            for (kind, values) in [("master", &p.master), ("m", &p.m), ("v", &p.v)] {
                tensors.insert(
                    format!("{kind}.{}", p.name),
                    Tensor::from_slice(values, values.len(), &Device::Cpu)?,
                );
            }
        }
        let metadata: HashMap<String, String> = [
            ("steps".to_string(), optimizer.steps.to_string()),
            ("config".to_string(), serde_json::to_string(&optimizer.config).unwrap_or_default()),
            ("rank".to_string(), rank.to_string()),
            ("world".to_string(), world.to_string()),
        ]
        .into();
        let path = tmp.join(optimizer_file(rank, world));
        safetensors::serialize_to_file(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata), &path)
            .map_err(|e| io_at(&path)(std::io::Error::other(e.to_string())))?;
        // Hashed here, while the file is in this host's page cache, not by rank 0.
        record_checksum(tmp, &optimizer_file(rank, world))?;
        Ok(())
    };
    if rank == 0 {
        let shapes: HashMap<String, Vec<usize>> = parameter_shapes(config).into_iter().collect();
        let shape_of = |name: &str| shapes.get(name).cloned().unwrap_or_default();
        let layout: Vec<(String, Vec<usize>, DType)> = units
            .iter()
            .flat_map(|unit| unit.params.iter().map(|(name, _)| (name.clone(), shape_of(name), DType::F32)))
            .collect();
        let state_text =
            serde_json::to_string_pretty(state).map_err(|e| TrainError::Invalid(e.to_string()))?;
        let options = SaveOptions { dtype: Some(weights_dtype), ..SaveOptions::default() };
        write_dir_atomically(
            dir,
            |_| false,
            |tmp| {
                let tmp_text = tmp.to_string_lossy().into_owned();
                collective.broadcast(tmp_text.into_bytes(), 0)?;
                write_shard(tmp)?;
                let mut writer = WeightsWriter::new(tmp, config, &layout, &options)?;
                for u in 0..units.len() {
                    for (name, tensor) in model.gather_masters(u)? {
                        writer.push(&name, &tensor.to_device(&Device::Cpu)?)?;
                    }
                }
                writer.finish()?;
                crate::faults::stall_checkpoint(state);
                collective.barrier()?;
                let state_path = tmp.join(STATE_FILE);
                std::fs::write(&state_path, state_text).map_err(io_at(&state_path))?;
                Ok::<_, TrainError>(())
            },
        )?;
    } else {
        let tmp = collective.broadcast(Vec::new(), 0)?;
        write_shard(Path::new(&String::from_utf8_lossy(&tmp).into_owned()))?;
        // Each unit's gather, which rank 0 writes.
        for u in 0..units.len() {
            model.gather_masters(u)?;
        }
        collective.barrier()?;
    }
    // Nobody goes on (or prunes) before the checkpoint is complete.
    collective.barrier()?;
    Ok(())
}

/// Reads a checkpoint for `rank` of `world`, whatever the world size that wrote it: the
/// model config, this rank's optimizer shards (masters and moments, resharded when the
/// world size changed) and the state. `load(dir, 0, 1)` gives the whole optimizer. The
/// files it reads are verified against the checkpoint's checksums first (each rank its
/// own optimizer file when the world size is unchanged).
pub fn load(dir: &Path, rank: usize, world: usize) -> Result<(Config, AdamW, TrainerState)> {
    let sums = read_checksums(dir)?;
    if let Some(sums) = &sums {
        verify_file(dir, sums, CONFIG_FILE)?;
        verify_file(dir, sums, STATE_FILE)?;
    }
    let config = Config::from_file(&dir.join(CONFIG_FILE))?;
    let state = read_state(dir)?;
    let old = OptimizerFiles::open(dir)?;
    if let Some(sums) = &sums {
        let old_world = old.maps.len();
        for r in (0..old_world).filter(|&r| old_world != world || r == rank) {
            verify_file(dir, sums, &optimizer_file(r, old_world))?;
        }
    }
    let mut params = Vec::new();
    for unit in units(&config, world) {
        for (p, (name, numel)) in unit.params.iter().enumerate() {
            let owned = unit.owned(p, rank);
            let get = |kind: &str| -> Result<Vec<f32>> {
                let mut slice = old.read_range(kind, name, *numel, owned.clone())?;
                slice.resize(unit.slice_len(p), 0.0);
                Ok(slice)
            };
            let mut param = ParamState::new(name, get("master")?);
            param.m = get("m")?;
            param.v = get("v")?;
            params.push(param);
        }
    }
    let mut optimizer = AdamW::new(old.adam, params);
    optimizer.steps = old.steps;
    Ok((config, optimizer, state))
}

/// The optimizer files of a checkpoint, mapped.
struct OptimizerFiles {
    /// Per rank: the path, the mapping, and each tensor's byte range in it.
    maps: Vec<(PathBuf, memmap2::Mmap, HashMap<String, std::ops::Range<usize>>)>,
    steps: u64,
    adam: AdamWConfig,
}

impl OptimizerFiles {
    fn open(dir: &Path) -> Result<Self> {
        let first = dir.join(optimizer_file(0, 1));
        let world = std::fs::read_dir(dir)
            .map_err(io_at(dir))?
            .filter_map(|e| e.ok())
            .find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("optimizer-00000-of-")?.strip_suffix(".safetensors")?.parse::<usize>().ok()
            })
            .ok_or_else(|| {
                TrainError::Invalid(format!(
                    "{}: no optimizer files (missing {})",
                    dir.display(),
                    first.display()
                ))
            })?;
        let mut maps = Vec::with_capacity(world);
        let mut info = HashMap::new();
        for rank in 0..world {
            let path = dir.join(optimizer_file(rank, world));
            let file = std::fs::File::open(&path).map_err(io_at(&path))?;
            // SAFETY: checkpoints are not modified while being read (they are written
            // under a temporary name and renamed).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_at(&path))?;
            let (header, metadata) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))?;
            if rank == 0 {
                info = metadata.metadata().clone().unwrap_or_default();
            }
            let data_start = 8 + header;
            let ranges = metadata
                .tensors()
                .into_iter()
                .map(|(name, t)| (name, data_start + t.data_offsets.0..data_start + t.data_offsets.1))
                .collect();
            maps.push((path, map, ranges));
        }
        let corrupt = |m: &str| TrainError::Invalid(format!("{}: {m}", maps[0].0.display()));
        let steps = info.get("steps").and_then(|s| s.parse().ok()).ok_or_else(|| corrupt("no step count"))?;
        let adam = info.get("config").and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
        Ok(Self { maps, steps, adam })
    }

    /// Elements `range` of parameter `name` (`numel` in all) of kind `master`, `m` or `v`,
    /// from the files of the ranks that hold them.
    fn read_range(
        &self,
        kind: &str,
        name: &str,
        numel: usize,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<f32>> {
        let world = self.maps.len();
        let old_len = numel.div_ceil(world);
        let key = format!("{kind}.{name}");
        let mut out = Vec::with_capacity(range.len());
        let mut at = range.start;
        while at < range.end {
            let rank = at / old_len;
            let (path, map, ranges) = &self.maps[rank];
            let values = ranges
                .get(&key)
                .and_then(|r| map.get(r.clone()))
                .ok_or_else(|| TrainError::Invalid(format!("{}: missing `{key}`", path.display())))?;
            let end = range.end.min((rank + 1) * old_len);
            let (from, to) = ((at - rank * old_len) * 4, (end - rank * old_len) * 4);
            let bytes = values.get(from..to).ok_or_else(|| {
                TrainError::Invalid(format!(
                    "{}: `{key}` holds {} values, fewer than expected",
                    path.display(),
                    values.len() / 4
                ))
            })?;
            out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            at = end;
        }
        Ok(out)
    }
}

/// A checkpoint's `trainer_state.json`.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display())))
}

/// The newest complete checkpoint under `root` whatever its stage's name (a stage renamed
/// in the recipe still has its checkpoints here), by stage index then step, with its
/// state; unreadable states are passed over.
pub fn newest_anywhere(root: &Path) -> Option<(PathBuf, TrainerState)> {
    stage_dirs(root)
        .into_iter()
        .filter_map(|stage| latest(root, &stage))
        .filter_map(|dir| read_state(&dir).ok().map(|state| (dir, state)))
        .max_by_key(|(_, state)| (state.stage_index, state.step))
}

/// The names of the directories under an output directory: the stages that have written
/// checkpoints there, under whatever names the recipe gave them then.
pub fn stage_dirs(root: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(root).into_iter().flatten().filter_map(|e| e.ok());
    entries.filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// The newest complete checkpoint of a stage: the highest `step-*` directory (temporary
/// directories are hidden and never match).
pub fn latest(root: &Path, stage: &str) -> Option<PathBuf> {
    steps(root, stage).into_iter().next_back().map(|(_, p)| p)
}

fn steps(root: &Path, stage: &str) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(root.join(stage))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(STATE_FILE).is_file().then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Removes all but the newest `keep_last` complete checkpoints of a stage, and what
/// interrupted writes left behind. A removal that fails (an evaluation job holding an old
/// checkpoint open on NFS, say) is a warning, not the end of a run whose new checkpoint is
/// safe: what could not be removed is returned, and tried again at the next prune.
pub fn prune(root: &Path, stage: &str, keep_last: usize) -> Vec<(PathBuf, std::io::Error)> {
    prune_with(root, stage, keep_last, |path| std::fs::remove_dir_all(path))
}

/// [`prune`] with the removal given, so that a failing one can be tested.
pub fn prune_with(
    root: &Path,
    stage: &str,
    keep_last: usize,
    remove: impl Fn(&Path) -> std::io::Result<()>,
) -> Vec<(PathBuf, std::io::Error)> {
    let all = steps(root, stage);
    let old = all.iter().take(all.len().saturating_sub(keep_last.max(1))).map(|(_, p)| p.clone());
    let mut failed = Vec::new();
    for path in old {
        if let Err(e) = remove(&path) {
            tracing::warn!(
                "could not remove {} ({e}); the run goes on, and the next save tries again",
                path.display()
            );
            failed.push((path, e));
        }
    }
    failed.extend(clean_leftovers(root, stage, &remove));
    failed
}

/// Clears what interrupted writes of a stage's checkpoints left behind. A `.step-N.old-PID`
/// whose `step-N` is missing is a complete checkpoint moved aside for a replacement that
/// never arrived: it is put back. The rest (temporary directories, old copies whose
/// replacement is in place) is removed. What could not be is returned, and warned about.
pub fn clean_leftovers(
    root: &Path,
    stage: &str,
    remove: &impl Fn(&Path) -> std::io::Result<()>,
) -> Vec<(PathBuf, std::io::Error)> {
    let mut failed = Vec::new();
    for path in leftovers(root, stage) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let moved_aside =
            name.strip_prefix('.').and_then(|n| n.split_once(".old-")).map(|(target, _)| target);
        let outcome = match moved_aside.map(|target| root.join(stage).join(target)) {
            Some(target) if !target.exists() => {
                tracing::warn!("putting back {}, moved aside by an interrupted save", target.display());
                std::fs::rename(&path, &target)
            }
            _ => remove(&path),
        };
        if let Err(e) = outcome {
            tracing::warn!("could not clear {} ({e}); the next save tries again", path.display());
            failed.push((path, e));
        }
    }
    failed
}

/// The hidden directories that interrupted writes of a stage's checkpoints left behind
/// (`.step-*.tmp-PID`, `.step-*.old-PID`). Removing them at start means a restart after a
/// full disk does not need room for two checkpoints.
pub fn leftovers(root: &Path, stage: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(stage))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(".step-") && (name.contains(".tmp-") || name.contains(".old-"))
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}
