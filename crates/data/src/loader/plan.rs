//! The epoch plan: which document pieces go into which row, as a pure function of the
//! documents' lengths, the seed and the epoch. Tokens are read only when a row is built.

use serde::{Deserialize, Serialize};

/// A stretch of one document: tokens `start..start + len` of document `doc` of shard
/// `shard` of mixture entry `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub source: u16,
    pub shard: u32,
    pub doc: u32,
    pub start: u32,
    pub len: u32,
}

/// What to do with a document longer than a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LongDocuments {
    /// Cut into row-sized pieces; positions restart at 0 in each piece.
    #[default]
    Split,
    /// Leave out (and count).
    Drop,
}

/// SplitMix64: a small, portable generator, so that the same seed gives the same order on
/// every machine and every version of every dependency.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// A uniform value in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Mixes several values into one seed.
pub fn seed_of(parts: &[u64]) -> u64 {
    let mut rng = SplitMix64(0x5EED);
    for &p in parts {
        rng.0 ^= p;
        rng.next_u64();
    }
    rng.next_u64()
}

/// Fisher-Yates shuffle with [`SplitMix64`].
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// One packed row: pieces in order, and the tokens they fill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPlan {
    pub pieces: Vec<Piece>,
    pub tokens: u32,
}

/// Best-fit decreasing over one window of pieces: the longest piece first, each into the
/// open row whose free space it fills most tightly, a new row when none has room.
/// Rows come out in the order they were opened.
pub fn pack_window(window: &[Piece], seq_len: u32) -> Vec<RowPlan> {
    let mut order: Vec<usize> = (0..window.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(window[i].len), i));
    let mut rows: Vec<RowPlan> = Vec::new();
    // (free space, row index), so the first entry at or above a length is the best fit.
    let mut free: std::collections::BTreeSet<(u32, usize)> = std::collections::BTreeSet::new();
    for i in order {
        let piece = window[i];
        let fit = free.range((piece.len, 0)..).next().copied();
        let row = match fit {
            Some(slot) => {
                free.remove(&slot);
                slot.1
            }
            None => {
                rows.push(RowPlan { pieces: Vec::new(), tokens: 0 });
                rows.len() - 1
            }
        };
        rows[row].pieces.push(piece);
        rows[row].tokens += piece.len;
        let left = seq_len - rows[row].tokens;
        if left > 0 {
            free.insert((left, row));
        }
    }
    rows
}
