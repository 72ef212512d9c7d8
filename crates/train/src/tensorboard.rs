//! TensorBoard's event files, so that a run opens in TensorBoard as torchtitan's and
//! Megatron's do: the scalars of `metrics.jsonl`, tagged `STAGE/NAME`, at each stage's step.
//!
//! The format is small enough to write by hand. A file is a sequence of TFRecords: the
//! payload's length (u64, little-endian), the masked CRC-32C of those 8 bytes, the payload,
//! and the payload's masked CRC-32C. Each payload is an `Event` protocol buffer: `wall_time`
//! (field 1, double), `step` (field 2, varint), then either `file_version` (field 3, the
//! first record: `brain.Event:2`) or a `Summary` (field 5) of `Value`s, each a `tag`
//! (field 1) and a `simple_value` (field 2, float).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use davinci_model::error::io_at;

use crate::error::Result;
use crate::metrics::StepMetrics;

/// One file per run directory, under a fixed name: resuming rewrites it from the kept
/// `metrics.jsonl`, so the series has neither the gap nor the duplicates that a crash
/// between checkpoints would leave.
pub const EVENTS_FILE: &str = "events.out.tfevents.0.davinci";

/// Appends events to a run's event file.
pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// Starts `dir`'s event file afresh with `history` (the steps a resume keeps), written
    /// to a temporary name and renamed, then opens it for appending.
    pub fn create<'a>(dir: &Path, history: impl IntoIterator<Item = &'a StepMetrics>) -> Result<Self> {
        let path = dir.join(EVENTS_FILE);
        let tmp = dir.join(format!(".{EVENTS_FILE}.tmp-{}", std::process::id()));
        let mut bytes = record(&event(now(), 0, &Body::FileVersion("brain.Event:2")));
        for metrics in history {
            bytes.extend(record(&step_event(metrics)));
        }
        std::fs::write(&tmp, bytes).map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_at(&path))?;
        let file = OpenOptions::new().append(true).open(&path).map_err(io_at(&path))?;
        Ok(Self { file, path })
    }

    pub fn append(&mut self, metrics: &StepMetrics) -> Result<()> {
        Ok(self.file.write_all(&record(&step_event(metrics))).map_err(io_at(&self.path))?)
    }
}

/// The scalars of one step, as (tag, value).
pub fn scalars(m: &StepMetrics) -> Vec<(String, f64)> {
    let all = [
        ("loss", m.loss),
        ("lr", Some(m.lr)),
        ("grad_norm", Some(m.grad_norm)),
        ("tokens_per_second", Some(m.tokens_per_second)),
        ("tokens_seen", Some(m.tokens_seen as f64)),
        ("tflops", m.tflops),
        ("mfu", m.mfu),
        ("peak_memory_gib", m.peak_memory_bytes.map(|b| b as f64 / (1u64 << 30) as f64)),
        ("data_wait_seconds", m.data_wait_seconds),
        ("collective_seconds", m.collective_seconds),
    ];
    let finite = all.into_iter().filter_map(|(name, v)| Some(name).zip(v.filter(|v| v.is_finite())));
    finite.map(|(name, v)| (format!("{}/{name}", m.stage), v)).collect()
}

fn step_event(m: &StepMetrics) -> Vec<u8> {
    // The step's wall time: when the run started plus its elapsed seconds would need the
    // start; the time of writing is what TensorBoard's "relative" axis expects anyway.
    event(now(), m.step as i64, &Body::Summary(scalars(m)))
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

enum Body<'a> {
    FileVersion(&'a str),
    Summary(Vec<(String, f64)>),
}

/// An `Event` message.
fn event(wall_time: f64, step: i64, body: &Body) -> Vec<u8> {
    let mut out = vec![0x09]; // field 1, 64-bit
    out.extend(wall_time.to_le_bytes());
    out.push(0x10); // field 2, varint
    varint(&mut out, step as u64);
    match body {
        Body::FileVersion(version) => length_delimited(&mut out, 3, version.as_bytes()),
        Body::Summary(values) => {
            let mut summary = Vec::new();
            for (tag, value) in values {
                let mut entry = Vec::new();
                length_delimited(&mut entry, 1, tag.as_bytes());
                entry.push(0x15); // field 2, 32-bit
                entry.extend((*value as f32).to_le_bytes());
                length_delimited(&mut summary, 1, &entry);
            }
            length_delimited(&mut out, 5, &summary);
        }
    }
    out
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn length_delimited(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// TFRecord framing around one payload.
fn record(payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend(length);
    out.extend(masked_crc(&length).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend(masked_crc(payload).to_le_bytes());
    out
}

/// TensorFlow's masking of a CRC-32C, so that a CRC of data holding CRCs stays strong.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_crc32c() {
        // RFC 3720's test vectors (TensorBoard's reader checks the masked form of these).
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    }

    #[test]
    fn varints_are_little_endian_groups_of_seven_bits() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }
}
