//! Sizes and durations as a person reads them in a log line: `0.29M`, `32.8B`, `1.5 GiB`,
//! `1h02m`.

/// Three significant figures at most, so that `0.29M` and `32.8B` line up with the tables
/// of model cards.
fn significant(value: f64) -> String {
    match value {
        v if v < 10.0 => format!("{v:.2}"),
        v if v < 100.0 => format!("{v:.1}"),
        v => format!("{v:.0}"),
    }
}

/// A count with a decimal unit: `512`, `4.10K`, `0.29M`, `32.8B`, `1.20T` (M from 100K up,
/// as parameter counts are written).
pub fn count(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e12 => format!("{}T", significant(n / 1e12)),
        n if n >= 1e9 => format!("{}B", significant(n / 1e9)),
        n if n >= 1e5 => format!("{}M", significant(n / 1e6)),
        n if n >= 1e3 => format!("{}K", significant(n / 1e3)),
        n => format!("{n:.0}"),
    }
}

/// Bytes with a binary unit: `512 B`, `3.00 KiB`, `1.50 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    if value < 1024.0 {
        return format!("{n} B");
    }
    let mut unit = 0;
    value /= 1024.0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", significant(value), UNITS[unit])
}

/// A duration to the second: `42s`, `3m05s`, `1h02m`, `2d03h`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".into();
    }
    let s = seconds.round() as u64;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_durations_read_as_a_person_writes_them() {
        assert_eq!(count(290_000), "0.29M");
        assert_eq!(count(32_763_876_352), "32.8B");
        assert_eq!(count(72_706_203_648), "72.7B");
        assert_eq!(count(4_096), "4.10K");
        assert_eq!(count(12), "12");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 10), "3.00 KiB");
        assert_eq!(bytes(3 << 29), "1.50 GiB");
        assert_eq!(duration(42.2), "42s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(3720.0), "1h02m");
        assert_eq!(duration(f64::NAN), "?");
    }
}
