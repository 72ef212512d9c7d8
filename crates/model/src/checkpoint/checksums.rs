//! A SHA-256 per file of every directory written through [`super::write_dir_atomically`],
//! in `checksums.sha256` beside the files, in `sha256sum`'s format (so `sha256sum -c
//! checksums.sha256` checks a checkpoint without davinci). Loading verifies the files it
//! reads against it, so a flipped bit on disk or a truncated copy is an error naming the
//! file instead of weights that train on quietly.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{io_at, ModelError, Result};

pub const CHECKSUMS_FILE: &str = "checksums.sha256";

/// The SHA-256 of a file, streamed. Only a regular file is read: a listed name that is a
/// FIFO or a device would block or never end.
pub fn file_sha256(path: &Path) -> Result<String> {
    super::regular_file(path)?;
    let mut file = fs::File::open(path).map_err(io_at(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hashes `dir/name` now, for [`write_checksums`] to take instead of reading the file
/// again: each FSDP rank hashes its own optimizer file, so rank 0 does not read them all.
pub fn record_checksum(dir: &Path, name: &str) -> Result<()> {
    let sum = file_sha256(&dir.join(name))?;
    let path = dir.join(format!(".{name}.sha256"));
    fs::write(&path, sum).map_err(io_at(&path))
}

/// Writes `checksums.sha256` for every regular file in `dir` (sorted by name), taking the
/// sums [`record_checksum`] left (and removing those notes) and hashing the other files.
pub fn write_checksums(dir: &Path) -> Result<()> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(io_at(dir))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != CHECKSUMS_FILE)
        .collect();
    names.sort();
    let mut text = String::new();
    for name in names.iter().filter(|n| !n.starts_with('.')) {
        let note = dir.join(format!(".{name}.sha256"));
        let sum = match fs::read_to_string(&note) {
            Ok(sum) if names.contains(&format!(".{name}.sha256")) => {
                fs::remove_file(&note).map_err(io_at(&note))?;
                sum.trim().to_string()
            }
            _ => file_sha256(&dir.join(name))?,
        };
        text.push_str(&format!("{sum}  {name}\n"));
    }
    let path = dir.join(CHECKSUMS_FILE);
    fs::write(&path, text).map_err(io_at(&path))
}

/// The checksums a directory lists, by file name; `None` where it has no list (a
/// checkpoint from elsewhere, or written before checksums were kept).
pub fn read_checksums(dir: &Path) -> Result<Option<BTreeMap<String, String>>> {
    let path = dir.join(CHECKSUMS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let mut sums = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = || ModelError::Checksum {
            path: path.clone(),
            message: format!("line {} is not `<sha256>  <file name>`", i + 1),
        };
        let (sum, name) = line.split_once("  ").ok_or_else(bad)?;
        let name = name.strip_prefix('*').unwrap_or(name);
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) || !is_plain_file_name(name) {
            return Err(bad());
        }
        sums.insert(name.to_string(), sum.to_ascii_lowercase());
    }
    Ok(Some(sums))
}

/// Checks the listed file `name` of `dir` against `sums`: `Ok(false)` when the list does not
/// name it, an error naming the file when its bytes differ.
pub fn verify_file(dir: &Path, sums: &BTreeMap<String, String>, name: &str) -> Result<bool> {
    let Some(expected) = sums.get(name) else { return Ok(false) };
    let path = dir.join(name);
    let actual = file_sha256(&path)?;
    if &actual != expected {
        return Err(ModelError::Checksum {
            path,
            message: format!(
                "SHA-256 {actual} differs from {expected} recorded in {CHECKSUMS_FILE}: the file is corrupt or \
                 was changed after the checkpoint was written"
            ),
        });
    }
    Ok(true)
}

/// What [`verify_dir`] found.
#[derive(Debug, Default)]
pub struct Verification {
    /// Files whose bytes match the list.
    pub verified: Vec<PathBuf>,
    /// Files present but not listed (added after the write), which nothing vouches for.
    pub unlisted: Vec<PathBuf>,
}

/// Verifies every file the list names (all must exist and match), and reports files the
/// list does not name. An error when the directory has no list.
pub fn verify_dir(dir: &Path) -> Result<Verification> {
    let sums = read_checksums(dir)?.ok_or_else(|| ModelError::Checksum {
        path: dir.join(CHECKSUMS_FILE),
        message: "missing: the directory was not written by davinci, or before checksums were kept".into(),
    })?;
    let mut report = Verification::default();
    for name in sums.keys() {
        verify_file(dir, &sums, name)?;
        report.verified.push(dir.join(name));
    }
    for entry in fs::read_dir(dir).map_err(io_at(dir))?.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_file() && name != CHECKSUMS_FILE && !sums.contains_key(&name) {
            report.unlisted.push(entry.path());
        }
    }
    report.unlisted.sort();
    Ok(report)
}

/// A name that stays inside its directory: one normal path component, no separator.
pub fn is_plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!((parts.next(), parts.next()), (Some(std::path::Component::Normal(_)), None))
        && !name.contains(['/', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_normal_components_are_plain_file_names() {
        for good in ["model-00001-of-00002.safetensors", "config.json", "a..b"] {
            assert!(is_plain_file_name(good), "{good}");
        }
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "./x"] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_flipped_byte_is_found_and_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.bin"), b"weights").unwrap();
        fs::write(dir.path().join("b.json"), b"{}").unwrap();
        // One file hashed ahead (as each rank hashes its own optimizer file).
        record_checksum(dir.path(), "b.json").unwrap();
        write_checksums(dir.path()).unwrap();
        assert!(!dir.path().join(".b.json.sha256").exists(), "the note is consumed");
        let report = verify_dir(dir.path()).unwrap();
        assert_eq!(report.verified.len(), 2);
        assert!(report.unlisted.is_empty());
        fs::write(dir.path().join("a.bin"), b"weighTs").unwrap();
        fs::write(dir.path().join("extra.txt"), b"later").unwrap();
        let error = verify_dir(dir.path()).unwrap_err().to_string();
        assert!(error.contains("a.bin") && error.contains("corrupt"), "{error}");
        let sums = read_checksums(dir.path()).unwrap().unwrap();
        assert!(verify_file(dir.path(), &sums, "b.json").unwrap());
        assert!(!verify_file(dir.path(), &sums, "extra.txt").unwrap());
        // A listed name that became a FIFO is refused, not waited on forever.
        fs::remove_file(dir.path().join("b.json")).unwrap();
        let made = std::process::Command::new("mkfifo").arg(dir.path().join("b.json")).status().unwrap();
        assert!(made.success());
        let error = verify_file(dir.path(), &sums, "b.json").unwrap_err().to_string();
        assert!(error.contains("not a regular file"), "{error}");
    }
}
