//! The shard format (`docs/shards.md`): token ids, document offsets and a loss-mask bit
//! per token in one memory-mappable file, with a JSON manifest per dataset.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{io_at, DataError, Result};

// Shards store little-endian integers and are read in place.
#[cfg(target_endian = "big")]
compile_error!("davinci shards are little-endian and memory-mapped as they are");

pub const MAGIC: &[u8; 8] = b"DVSHARD1";
pub const MANIFEST: &str = "dataset.json";
const HEADER: usize = 24;

/// A shard as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub file: String,
    pub docs: u64,
    pub tokens: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Writes documents into shards of at most `max_tokens` tokens each (a document is never
/// split across shards), each through a temporary name.
pub struct ShardWriter {
    dir: PathBuf,
    max_tokens: usize,
    offsets: Vec<u64>,
    tokens: Vec<u32>,
    loss: Vec<bool>,
    written: Vec<ShardInfo>,
}

impl ShardWriter {
    /// Starts writing a dataset into `dir`. A manifest already there is removed first, so
    /// that a re-prepare cut short leaves a directory known to be incomplete; so are the
    /// temporary files of a preparation that was killed (they would otherwise pile up).
    pub fn new(dir: &Path, max_tokens: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let manifest = dir.join(MANIFEST);
        if manifest.exists() {
            std::fs::remove_file(&manifest).map_err(io_at(&manifest))?;
        }
        let entries = std::fs::read_dir(dir).map_err(io_at(dir))?.filter_map(|e| e.ok());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") && entry.path().is_file() {
                std::fs::remove_file(entry.path()).map_err(io_at(entry.path()))?;
            }
        }
        Ok(Self {
            dir: dir.into(),
            max_tokens: max_tokens.max(1),
            offsets: vec![0],
            tokens: Vec::new(),
            loss: Vec::new(),
            written: Vec::new(),
        })
    }

    pub fn push(&mut self, ids: &[u32], loss: &[bool]) -> Result<()> {
        if ids.len() != loss.len() {
            return Err(DataError::Invalid(format!("{} tokens with {} loss flags", ids.len(), loss.len())));
        }
        if !self.tokens.is_empty() && self.tokens.len() + ids.len() > self.max_tokens {
            self.flush()?;
        }
        self.tokens.extend_from_slice(ids);
        self.loss.extend_from_slice(loss);
        self.offsets.push(self.tokens.len() as u64);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.offsets.len() == 1 {
            return Ok(());
        }
        let name = format!("shard-{:05}.bin", self.written.len());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        {
            let file = File::create(&tmp).map_err(io_at(&tmp))?;
            let mut out =
                HashingWriter { inner: BufWriter::new(file), hasher: &mut hasher, bytes: &mut bytes };
            let docs = (self.offsets.len() - 1) as u64;
            let write = |out: &mut HashingWriter<_>, data: &[u8]| out.write_all(data).map_err(io_at(&tmp));
            write(&mut out, MAGIC)?;
            write(&mut out, &docs.to_le_bytes())?;
            write(&mut out, &(self.tokens.len() as u64).to_le_bytes())?;
            write(&mut out, bytemuck::cast_slice(&self.offsets))?;
            write(&mut out, bytemuck::cast_slice(&self.tokens))?;
            let mut mask = vec![0u8; self.loss.len().div_ceil(8)];
            for (i, _) in self.loss.iter().enumerate().filter(|(_, &l)| l) {
                mask[i / 8] |= 1 << (i % 8);
            }
            write(&mut out, &mask)?;
            let file = out
                .inner
                .into_inner()
                .map_err(|e| DataError::Io { path: tmp.clone(), source: e.into_error() })?;
            file.sync_all().map_err(io_at(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
        self.written.push(ShardInfo {
            file: name,
            docs: (self.offsets.len() - 1) as u64,
            tokens: self.tokens.len() as u64,
            bytes,
            sha256: hex::encode(hasher.finalize()),
        });
        self.offsets = vec![0];
        self.tokens.clear();
        self.loss.clear();
        Ok(())
    }

    /// Writes the last shard and returns every shard written.
    /// Shards of an earlier, larger preparation that are not part of this one are removed.
    pub fn finish(mut self) -> Result<Vec<ShardInfo>> {
        self.flush()?;
        for index in self.written.len().. {
            let stale = self.dir.join(format!("shard-{index:05}.bin"));
            if !stale.exists() {
                break;
            }
            std::fs::remove_file(&stale).map_err(io_at(&stale))?;
        }
        Ok(self.written)
    }
}

struct HashingWriter<'a, W: Write> {
    inner: W,
    hasher: &'a mut Sha256,
    bytes: &'a mut u64,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        *self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A memory-mapped shard.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    docs: usize,
    tokens: usize,
}

impl Shard {
    /// Maps a shard and checks its header against its length (and `expected`, if given).
    pub fn open(path: &Path, expected: Option<&ShardInfo>) -> Result<Self> {
        let bad = |message: String| DataError::Shard { path: path.into(), message };
        let file = File::open(path).map_err(io_at(path))?;
        // SAFETY: read-only map; shards are immutable once renamed into place.
        let map = unsafe { Mmap::map(&file) }.map_err(io_at(path))?;
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(bad("not a davinci shard (bad magic or too short)".into()));
        }
        let read_u64 = |at: usize| u64::from_le_bytes(map[at..at + 8].try_into().unwrap_or([0; 8])) as usize;
        let (docs, tokens) = (read_u64(8), read_u64(16));
        // Checked: a corrupt header may hold any counts.
        let want = docs
            .checked_add(1)
            .and_then(|d| d.checked_mul(8))
            .and_then(|o| tokens.checked_mul(4).and_then(|t| o.checked_add(t)))
            .and_then(|n| n.checked_add(HEADER + tokens.div_ceil(8)))
            .unwrap_or(usize::MAX);
        if map.len() != want {
            return Err(bad(format!("{} bytes, but its header ({docs} documents, {tokens} tokens) needs {want}: truncated or corrupt", map.len())));
        }
        if let Some(info) = expected {
            if info.docs as usize != docs
                || info.tokens as usize != tokens
                || info.bytes as usize != map.len()
            {
                return Err(bad(format!(
                    "the manifest lists {} documents, {} tokens, {} bytes; the file has {docs}, {tokens}, {}",
                    info.docs,
                    info.tokens,
                    info.bytes,
                    map.len()
                )));
            }
        }
        let shard = Self { path: path.into(), map, docs, tokens };
        let offsets = shard.offsets();
        if offsets.first() != Some(&0)
            || offsets.last() != Some(&(tokens as u64))
            || offsets.windows(2).any(|w| w[1] < w[0])
        {
            return Err(bad("document offsets are not increasing from 0 to the token count".into()));
        }
        Ok(shard)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn num_docs(&self) -> usize {
        self.docs
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens
    }

    fn offsets(&self) -> &[u64] {
        bytemuck::cast_slice(&self.map[HEADER..HEADER + 8 * (self.docs + 1)])
    }

    /// All token ids of the shard.
    pub fn tokens(&self) -> &[u32] {
        let start = HEADER + 8 * (self.docs + 1);
        bytemuck::cast_slice(&self.map[start..start + 4 * self.tokens])
    }

    /// Token range of document `d`.
    pub fn doc_range(&self, d: usize) -> std::ops::Range<usize> {
        let offsets = self.offsets();
        offsets[d] as usize..offsets[d + 1] as usize
    }

    /// Whether token `i` carries loss.
    pub fn loss(&self, i: usize) -> bool {
        let start = HEADER + 8 * (self.docs + 1) + 4 * self.tokens;
        self.map[start + i / 8] & (1 << (i % 8)) != 0
    }

    /// SHA-256 of the whole file.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.map[..]))
    }
}
