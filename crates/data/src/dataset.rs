//! A prepared dataset: its manifest and shards (`docs/shards.md`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_at, DataError, Result};
use crate::shard::{Shard, ShardInfo, MANIFEST};

/// Where a dataset's records came from, so that a changed source is noticed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    pub template: String,
    pub tokenizer_sha256: String,
    pub settings_sha256: String,
    pub settings: serde_json::Value,
    pub sources: Vec<SourceInfo>,
    pub shards: Vec<ShardInfo>,
    pub docs: u64,
    pub tokens: u64,
    pub loss_tokens: u64,
    pub report: serde_json::Value,
}

impl Manifest {
    /// A manifest for shards written outside `prepare` (tests, benchmarks, imports): counts
    /// are summed from the shards; no sources, settings or report.
    pub fn for_shards(name: &str, template: &str, tokenizer_sha256: &str, shards: Vec<ShardInfo>) -> Self {
        Self {
            format: 1,
            name: name.into(),
            template: template.into(),
            tokenizer_sha256: tokenizer_sha256.into(),
            settings_sha256: String::new(),
            settings: serde_json::Value::Null,
            sources: Vec::new(),
            docs: shards.iter().map(|s| s.docs).sum(),
            tokens: shards.iter().map(|s| s.tokens).sum(),
            loss_tokens: 0,
            shards,
            report: serde_json::Value::Null,
        }
    }

    /// Writes `dataset.json` into `dir` through a temporary name: the last step of a
    /// prepare, so that a dataset directory without it is known to be incomplete.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let tmp = dir.join(format!(".{MANIFEST}.tmp-{}", std::process::id()));
        let text = serde_json::to_string_pretty(self).map_err(|e| DataError::Invalid(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(io_at(&tmp))?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_at(&path))
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
        serde_json::from_str(&text)
            .map_err(|e| DataError::Shard { path, message: format!("invalid manifest: {e}") })
    }
}

/// An opened dataset: the manifest and its memory-mapped shards.
pub struct Dataset {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub shards: Vec<Shard>,
}

impl Dataset {
    /// Opens every shard, checking its length and header against the manifest.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        let shards = manifest
            .shards
            .iter()
            .map(|info| Shard::open(&dir.join(&info.file), Some(info)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { dir: dir.into(), manifest, shards })
    }

    /// Checks every shard's SHA-256 against the manifest.
    pub fn verify(&self) -> Result<()> {
        for (shard, info) in self.shards.iter().zip(&self.manifest.shards) {
            let actual = shard.sha256();
            if actual != info.sha256 {
                return Err(DataError::Shard {
                    path: shard.path().into(),
                    message: format!("checksum {actual} differs from the manifest's {}", info.sha256),
                });
            }
        }
        Ok(())
    }
}

/// Refuses datasets made with different tokenizers, naming two that differ.
pub fn ensure_same_tokenizer(datasets: &[&Dataset]) -> Result<()> {
    if let Some(first) = datasets.first() {
        for other in &datasets[1..] {
            if other.manifest.tokenizer_sha256 != first.manifest.tokenizer_sha256 {
                return Err(DataError::Invalid(format!(
                    "datasets {} and {} were tokenized with different tokenizers ({} vs {}); prepare them again with one",
                    first.dir.display(),
                    other.dir.display(),
                    &first.manifest.tokenizer_sha256[..12.min(first.manifest.tokenizer_sha256.len())],
                    &other.manifest.tokenizer_sha256[..12.min(other.manifest.tokenizer_sha256.len())]
                )));
            }
        }
    }
    Ok(())
}
