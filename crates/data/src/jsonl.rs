//! Writing records as JSON Lines, atomically: the file appears under its name only once
//! every record is written and synced, so an interrupted run never leaves half a file
//! that a later `prepare` would read as complete.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{io_at, DataError, Result};

/// Writes one JSON object per line to `path` through a temporary sibling, then renames it.
pub fn write_jsonl<T: Serialize>(path: &Path, records: impl IntoIterator<Item = T>) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let file = std::fs::File::create(&tmp).map_err(io_at(&tmp))?;
    let mut out = std::io::BufWriter::new(file);
    for record in records {
        serde_json::to_writer(&mut out, &record)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))?;
        out.write_all(b"\n").map_err(io_at(&tmp))?;
    }
    let file = out.into_inner().map_err(|e| DataError::Io { path: tmp.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))
}
