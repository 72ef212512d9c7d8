//! One run per output directory: two `davinci train` processes writing the same
//! checkpoints and `metrics.jsonl` would each lose the other's work. Rank 0 holds an
//! exclusive lock on `OUTPUT_DIR/.davinci.lock` (flock, released by the kernel when the
//! process ends however it ends, so a crash leaves no stale lock), with its host and pid
//! written inside for the error that a second run gets.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use davinci_model::error::io_at;

use crate::error::{Result, TrainError};

pub const LOCK_FILE: &str = ".davinci.lock";

/// Held for as long as the run writes into its output directory.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

impl RunLock {
    /// Takes the lock on `output_dir` (created if missing), or fails naming the holder.
    pub fn acquire(output_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(output_dir).map_err(io_at(output_dir))?;
        let path = output_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_at(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another process" } else { holder };
                return Err(TrainError::Invalid(format!(
                    "{} is in use by another davinci run ({holder}); wait for it to end, or give this run \
                     another --output-dir",
                    output_dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(
                    "{} cannot be locked on this filesystem ({e}); a second run on this directory would \
                     not be detected",
                    path.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_at(&path)(e).into()),
        }
        let me = format!("pid {} on host {}", std::process::id(), host_name());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(me.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(io_at(&path))?;
        Ok(Self { _file: file, path })
    }
}

/// This machine's name, for people reading the error on another one.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_on_the_same_directory_is_refused_with_the_holder_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let error = RunLock::acquire(dir.path()).unwrap_err().to_string();
        let me = format!("pid {}", std::process::id());
        assert!(error.contains("in use by another davinci run") && error.contains(&me), "{error}");
        assert!(error.contains(&host_name()), "{error}");
        drop(first);
        // Released with its holder: the next run takes it.
        RunLock::acquire(dir.path()).unwrap();
    }
}
