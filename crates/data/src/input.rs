//! Reading record files: JSONL (plain, `.gz`, `.zst`) streamed line by line, SWE-agent
//! `.traj` files whole; globs expanded; the bytes hashed as they are read.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{io_at, DataError, Result};

/// Expands each pattern (a path or a glob) to files, sorted, failing on a pattern that
/// matches nothing so that a typo in a recipe is not a silently empty dataset.
pub fn expand_sources(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for pattern in patterns {
        let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
        let text = full.to_string_lossy().into_owned();
        let mut matched: Vec<PathBuf> = glob::glob(&text)
            .map_err(|e| DataError::Invalid(format!("source pattern `{pattern}`: {e}")))?
            .filter_map(|entry| entry.ok())
            .filter(|p| p.is_file())
            .collect();
        if matched.is_empty() {
            return Err(DataError::Io {
                path: full,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no file matches this source"),
            });
        }
        matched.sort();
        files.extend(matched);
    }
    Ok(files)
}

/// A record file being read: its lines (1-based numbers) and, at the end, its hash.
pub struct RecordReader {
    path: PathBuf,
    lines: Box<dyn BufRead + Send>,
    /// Shared with the decoder chain so the hash covers the file's raw bytes.
    raw: std::sync::Arc<std::sync::Mutex<(Sha256, u64)>>,
    line: usize,
    whole_file: bool,
    done: bool,
}

/// The raw-byte tap: hashes what the decoder pulls from the file.
struct Tap {
    file: File,
    state: std::sync::Arc<std::sync::Mutex<(Sha256, u64)>>,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Ok(mut state) = self.state.lock() {
            state.0.update(&buf[..n]);
            state.1 += n as u64;
        }
        Ok(n)
    }
}

/// A record's text, or why it is not text.
pub type RecordText = std::result::Result<String, String>;

fn utf8(bytes: Vec<u8>) -> RecordText {
    String::from_utf8(bytes).map_err(|e| format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()))
}

impl RecordReader {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io_at(path))?;
        let raw = std::sync::Arc::new(std::sync::Mutex::new((Sha256::new(), 0u64)));
        let tap = Tap { file, state: raw.clone() };
        let name = path.to_string_lossy();
        let lines: Box<dyn BufRead + Send> = if name.ends_with(".gz") {
            Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(tap)))
        } else if name.ends_with(".zst") {
            Box::new(BufReader::new(zstd::stream::read::Decoder::new(tap).map_err(io_at(path))?))
        } else {
            Box::new(BufReader::with_capacity(1 << 20, tap))
        };
        let whole_file = name.ends_with(".traj") || name.ends_with(".json");
        Ok(Self { path: path.into(), lines, raw, line: 0, whole_file, done: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next non-empty record with its line number; a `.traj`/`.json` file is one
    /// record. A line that is not UTF-8 comes back as `Err` (the caller counts it as a
    /// malformed record and goes on); only a failure to read the file stops the reader.
    pub fn next_record(&mut self) -> Result<Option<(usize, RecordText)>> {
        if self.done {
            return Ok(None);
        }
        if self.whole_file {
            let mut bytes = Vec::new();
            self.lines.read_to_end(&mut bytes).map_err(io_at(&self.path))?;
            self.done = true;
            return Ok(Some((1, utf8(bytes))));
        }
        loop {
            let mut bytes = Vec::new();
            let n = self.lines.read_until(b'\n', &mut bytes).map_err(|e| DataError::Record {
                path: self.path.clone(),
                line: self.line + 1,
                message: e.to_string(),
            })?;
            if n == 0 {
                self.done = true;
                return Ok(None);
            }
            self.line += 1;
            if !bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some((self.line, utf8(bytes))));
            }
        }
    }

    /// Reads to the end and returns the SHA-256 and size of the file's raw bytes.
    pub fn finish(mut self) -> Result<(String, u64)> {
        std::io::copy(&mut self.lines, &mut std::io::sink()).map_err(io_at(&self.path))?;
        let state = self.raw.lock().map_err(|_| DataError::Invalid("hash state poisoned".into()))?;
        Ok((hex::encode(state.0.clone().finalize()), state.1))
    }
}
