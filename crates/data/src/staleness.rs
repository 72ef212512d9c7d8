//! Whether a prepared dataset still matches its recipe entry: the trainer prepares only
//! datasets whose shards are missing or stale, so one command runs a recipe from scratch.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::dataset::Manifest;
use crate::error::{io_at, Result};
use crate::input::expand_sources;
use crate::prepare::DatasetSpec;
use crate::shard::MANIFEST;

/// The size and SHA-256 of every file a dataset's sources match, sorted: what its
/// preparation read, and so what a resume must find unchanged.
pub fn source_digests(spec: &DatasetSpec, base: &Path) -> Result<Vec<(u64, String)>> {
    let files = expand_sources(&spec.sources, base)?;
    let mut digests = Vec::with_capacity(files.len());
    for file in &files {
        digests.push(file_digest(file)?);
    }
    digests.sort();
    Ok(digests)
}

/// Why the dataset in `out` must be prepared again, or `None` when its manifest matches the
/// tokenizer, the settings and the sources' `digests` (from [`source_digests`]: compared by
/// size and SHA-256, so a moved copy of the same file still matches).
pub fn stale_reason(
    spec: &DatasetSpec,
    base: &Path,
    tokenizer_sha256: &str,
    out: &Path,
    digests: &[(u64, String)],
) -> Result<Option<String>> {
    if !out.join(MANIFEST).is_file() {
        return Ok(Some("not prepared yet".into()));
    }
    let manifest = match Manifest::read(out) {
        Ok(manifest) => manifest,
        Err(e) => return Ok(Some(format!("its manifest is unreadable ({e})"))),
    };
    if manifest.tokenizer_sha256 != tokenizer_sha256 {
        return Ok(Some("the tokenizer changed".into()));
    }
    if manifest.settings_sha256 != spec.settings_hash(base)? {
        return Ok(Some(
            "its template, filters or reference files changed, or davinci renders it differently".into(),
        ));
    }
    let mut before: Vec<(u64, String)> =
        manifest.sources.iter().map(|s| (s.bytes, s.sha256.clone())).collect();
    before.sort();
    if digests != before.as_slice() {
        return Ok(Some(format!(
            "its sources changed ({} files now, {} when prepared)",
            digests.len(),
            before.len()
        )));
    }
    Ok(None)
}

/// Size and SHA-256 of a file's bytes, as `prepare` records them.
fn file_digest(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(io_at(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex::encode(hasher.finalize())))
}
