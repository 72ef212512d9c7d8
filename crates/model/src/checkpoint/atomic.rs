//! Writing a directory so that a crash never leaves one that looks complete: everything
//! goes into a hidden sibling first, which is renamed into place at the end.

use std::fs;
use std::path::{Path, PathBuf};

use super::checksums::write_checksums;
use crate::error::{io_at, ModelError, Result};

/// Runs `write` on a fresh temporary directory next to `dir`, records each file's SHA-256
/// (see [`super::checksums`]), syncs what it wrote, and renames it to `dir`; when `write`
/// fails, the temporary directory is removed, so a full disk is not left fuller. An existing `dir` is replaced only after the new one is complete;
/// the files in it that `keep` accepts are carried over (a tokenizer next to the weights,
/// say). `write` may fail with the caller's own error type (a trainer's collectives).
pub fn write_dir_atomically<E: From<ModelError>>(
    dir: &Path,
    keep: impl Fn(&str) -> bool,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dir
        .file_name()
        .ok_or_else(|| ModelError::Io {
            path: dir.into(),
            source: std::io::Error::other("a checkpoint directory needs a name"),
        })?
        .to_string_lossy()
        .into_owned();
    fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_at(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_at(&tmp))?;
    let written = write(&tmp).and_then(|()| Ok(install(dir, &parent, &name, &tmp, keep)?));
    if written.is_err() && tmp.exists() {
        if let Err(e) = fs::remove_dir_all(&tmp) {
            tracing::warn!("could not remove the unfinished {}: {e}", tmp.display());
        }
    }
    written
}

/// Carries the kept files over, syncs, and swaps the finished `tmp` in for `dir`.
fn install(dir: &Path, parent: &Path, name: &str, tmp: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
    let pid = std::process::id();
    if dir.is_dir() {
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let entry = entry.map_err(io_at(dir))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_file() && keep(&file_name) && !tmp.join(&file_name).exists() {
                fs::copy(entry.path(), tmp.join(&file_name)).map_err(io_at(entry.path()))?;
            }
        }
    }
    write_checksums(tmp)?;
    sync_dir_contents(tmp)?;
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{pid}"));
        fs::rename(dir, &old).map_err(io_at(dir))?;
        if let Err(e) = fs::rename(tmp, dir) {
            // The old copy goes back: never end with neither in place.
            let _ = fs::rename(&old, dir);
            return Err(io_at(dir)(e));
        }
        // The new copy is in place; an old one held open elsewhere (NFS) goes later.
        if let Err(e) = fs::remove_dir_all(&old) {
            tracing::warn!("could not remove the replaced {} ({e})", old.display());
        }
    } else {
        fs::rename(tmp, dir).map_err(io_at(dir))?;
    }
    sync_dir(parent)
}

fn sync_dir_contents(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        if path.is_file() {
            fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io_at(&path))?;
        }
    }
    sync_dir(dir)
}

/// Makes a directory's entries durable (a no-op where directories cannot be opened).
fn sync_dir(dir: &Path) -> Result<()> {
    if let Ok(handle) = fs::File::open(dir) {
        // Some filesystems refuse fsync on directories; the data itself is already synced.
        let _ = handle.sync_all();
    }
    Ok(())
}
