//! The streaming loader: packed rows of exactly `seq_len` tokens from a weighted,
//! deterministic, resumable mixture of prepared datasets.
//!
//! The rule that makes it elastic: one global sequence of rows per seed, the same at any
//! world size. An epoch's pieces (documents, repeated by their dataset's upsampling factor
//! and cut to `seq_len` where longer) are shuffled by `(seed, epoch)` and packed
//! best-fit-decreasing within windows of `window` pieces; a global batch is the next
//! `global_rows` rows of that sequence; each rank takes `global_rows / world` of them,
//! balanced by real tokens. So the global batches do not depend on the world size, and a
//! run can resume on a different number of GPUs with the same global batch.

pub mod batch;
pub mod plan;
mod prefetch;

use serde::{Deserialize, Serialize};

pub use batch::{Batch, IGNORE};
pub use plan::{LongDocuments, Piece, RowPlan};
pub use prefetch::Prefetcher;

use crate::dataset::{ensure_same_tokenizer, Dataset};
use crate::error::{DataError, Result};
use plan::{pack_window, seed_of, shuffle, SplitMix64};

/// A dataset of a stage's mixture and how often an epoch visits each of its documents:
/// 3.0 visits each three times (at different places), 0.5 a random half.
pub struct MixtureEntry {
    pub dataset: Dataset,
    pub upsample: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    pub seq_len: u32,
    /// Rows per global batch (tokens per optimizer step / seq_len).
    pub global_rows: usize,
    /// Pieces packed together; larger windows pad less.
    pub window: usize,
    pub long_documents: LongDocuments,
    pub seed: u64,
    /// Token id of padding (its labels are -100 whatever it is).
    pub pad_id: u32,
    /// Labels only where the shards mark loss (assistant-only SFT), or on every token.
    #[serde(default = "yes")]
    pub loss_mask: bool,
}

fn yes() -> bool {
    true
}

/// Where the loader is: a handful of integers. Restoring it regenerates the epoch's order
/// and packs one window; nothing consumed is read again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    /// Window of the epoch holding the next row.
    pub window: u64,
    /// Next row within that window.
    pub row: u64,
    /// Global batches handed out so far.
    pub batches: u64,
}

/// Counts of one epoch's plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EpochStats {
    pub documents: u64,
    pub pieces: u64,
    pub split_documents: u64,
    pub dropped_documents: u64,
    pub rows: u64,
    pub tokens: u64,
    pub padding_fraction: f64,
    /// Per mixture entry: tokens in the epoch (after upsampling) and their share.
    pub tokens_per_source: Vec<u64>,
    pub share_per_source: Vec<f64>,
}

pub struct Loader {
    entries: Vec<MixtureEntry>,
    config: LoaderConfig,
    state: LoaderState,
    /// The current epoch's pieces, shuffled; built for `pieces_epoch`.
    pieces: Vec<Piece>,
    pieces_epoch: Option<u64>,
    /// The current window's rows; packed for `rows_window`.
    rows: Vec<RowPlan>,
    rows_window: Option<(u64, u64)>,
}

impl Loader {
    pub fn new(entries: Vec<MixtureEntry>, config: LoaderConfig, state: LoaderState) -> Result<Self> {
        if entries.is_empty() {
            return Err(DataError::Invalid("a loader needs at least one dataset".into()));
        }
        if config.seq_len == 0 || config.global_rows == 0 || config.window == 0 {
            return Err(DataError::Invalid("seq_len, global_rows and window must be positive".into()));
        }
        ensure_same_tokenizer(&entries.iter().map(|e| &e.dataset).collect::<Vec<_>>())?;
        if let Some(bad) = entries.iter().find(|e| !(e.upsample.is_finite() && e.upsample >= 0.0)) {
            return Err(DataError::Invalid(format!(
                "{}: upsampling factor {} is not a non-negative number",
                bad.dataset.dir.display(),
                bad.upsample
            )));
        }
        let mut loader = Self {
            entries,
            config,
            state,
            pieces: Vec::new(),
            pieces_epoch: None,
            rows: Vec::new(),
            rows_window: None,
        };
        if loader.epoch_pieces(state.epoch)?.is_empty() {
            return Err(DataError::Invalid("the mixture has no documents".into()));
        }
        Ok(loader)
    }

    pub fn state(&self) -> LoaderState {
        self.state
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Gives the datasets back (to build a loader with another state).
    pub fn into_entries(self) -> Vec<MixtureEntry> {
        self.entries
    }

    /// This rank's share of the next global batch; `world` must divide `global_rows`.
    pub fn next_batch(&mut self, rank: usize, world: usize) -> Result<Batch> {
        if world == 0 || rank >= world || !self.config.global_rows.is_multiple_of(world) {
            return Err(DataError::Invalid(format!(
                "rank {rank} of {world}: the world size must divide the {} rows of a global batch",
                self.config.global_rows
            )));
        }
        let mut rows = Vec::with_capacity(self.config.global_rows);
        while rows.len() < self.config.global_rows {
            rows.push(self.next_row()?);
        }
        self.state.batches += 1;
        let mine = assign_rows(&rows, world)[rank].iter().map(|&i| &rows[i]).collect::<Vec<_>>();
        let datasets: Vec<&Dataset> = self.entries.iter().map(|e| &e.dataset).collect();
        Ok(Batch::build(
            &mine,
            &datasets,
            self.config.seq_len as usize,
            self.config.pad_id,
            self.config.loss_mask,
        ))
    }

    /// The next row of the global sequence, moving to the next window and epoch as needed.
    fn next_row(&mut self) -> Result<RowPlan> {
        loop {
            let (epoch, window) = (self.state.epoch, self.state.window);
            let windows = self.epoch_pieces(epoch)?.len().div_ceil(self.config.window) as u64;
            if window >= windows {
                self.state = LoaderState { epoch: epoch + 1, window: 0, row: 0, ..self.state };
                continue;
            }
            if self.rows_window != Some((epoch, window)) {
                let start = window as usize * self.config.window;
                let end = (start + self.config.window).min(self.pieces.len());
                self.rows = pack_window(&self.pieces[start..end], self.config.seq_len);
                self.rows_window = Some((epoch, window));
            }
            if let Some(row) = self.rows.get(self.state.row as usize) {
                let row = row.clone();
                self.state.row += 1;
                return Ok(row);
            }
            self.state.window += 1;
            self.state.row = 0;
        }
    }

    /// The shuffled pieces of an epoch (cached for the current one).
    fn epoch_pieces(&mut self, epoch: u64) -> Result<&[Piece]> {
        if self.pieces_epoch != Some(epoch) {
            let (pieces, _) = plan_epoch(&self.entries, &self.config, epoch);
            self.pieces = pieces;
            self.pieces_epoch = Some(epoch);
        }
        Ok(&self.pieces)
    }

    /// The document bounds (`cu_seqlens`, padding as a document of its own, as
    /// [`Batch`] lays a row out) of every row of an epoch, from the shard indexes alone.
    pub fn epoch_row_bounds(&self, epoch: u64) -> impl Iterator<Item = Vec<u32>> + '_ {
        let (pieces, _) = plan_epoch(&self.entries, &self.config, epoch);
        let seq_len = self.config.seq_len;
        let rows: Vec<RowPlan> =
            pieces.chunks(self.config.window).flat_map(|window| pack_window(window, seq_len)).collect();
        rows.into_iter().map(move |row| {
            let mut cu = vec![0u32];
            for piece in &row.pieces {
                cu.push(cu[cu.len() - 1] + piece.len);
            }
            if row.tokens < seq_len {
                cu.push(seq_len);
            }
            cu
        })
    }

    /// The counts of an epoch's plan, from the shard indexes alone.
    pub fn epoch_stats(&self, epoch: u64) -> EpochStats {
        let (pieces, mut stats) = plan_epoch(&self.entries, &self.config, epoch);
        let mut rows = 0u64;
        for window in pieces.chunks(self.config.window) {
            rows += pack_window(window, self.config.seq_len).len() as u64;
        }
        stats.rows = rows;
        let capacity = rows * self.config.seq_len as u64;
        stats.padding_fraction =
            if capacity == 0 { 0.0 } else { 1.0 - stats.tokens as f64 / capacity as f64 };
        stats.share_per_source =
            stats.tokens_per_source.iter().map(|&t| t as f64 / stats.tokens.max(1) as f64).collect();
        stats
    }
}

/// An epoch's pieces in order, and their counts (rows and padding left to the caller).
fn plan_epoch(entries: &[MixtureEntry], config: &LoaderConfig, epoch: u64) -> (Vec<Piece>, EpochStats) {
    let mut stats = EpochStats { tokens_per_source: vec![0; entries.len()], ..EpochStats::default() };
    let mut pieces = Vec::new();
    let seq_len = config.seq_len;
    for (source, entry) in entries.iter().enumerate() {
        let whole = entry.upsample.floor() as u64;
        let fraction = entry.upsample - entry.upsample.floor();
        for (s, shard) in entry.dataset.shards.iter().enumerate() {
            for d in 0..shard.num_docs() {
                let len = shard.doc_range(d).len() as u32;
                let mut copies = whole;
                if fraction > 0.0
                    && SplitMix64(seed_of(&[config.seed, epoch, source as u64, s as u64, d as u64])).unit()
                        < fraction
                {
                    copies += 1;
                }
                if copies == 0 || len == 0 {
                    continue;
                }
                stats.documents += copies;
                if len > seq_len {
                    if config.long_documents == LongDocuments::Drop {
                        stats.dropped_documents += copies;
                        continue;
                    }
                    stats.split_documents += copies;
                }
                for _ in 0..copies {
                    let mut start = 0;
                    while start < len {
                        let piece_len = (len - start).min(seq_len);
                        pieces.push(Piece {
                            source: source as u16,
                            shard: s as u32,
                            doc: d as u32,
                            start,
                            len: piece_len,
                        });
                        start += piece_len;
                    }
                    stats.tokens += len as u64;
                    stats.tokens_per_source[source] += len as u64;
                }
            }
        }
    }
    stats.pieces = pieces.len() as u64;
    shuffle(&mut pieces, seed_of(&[config.seed, epoch]));
    (pieces, stats)
}

/// Splits a global batch's rows among `world` ranks, `rows / world` each, balancing real
/// tokens: the fullest row first, to the rank with the fewest tokens that still has room
/// (ties to the lowest rank). Returns each rank's row indices in global order.
pub fn assign_rows(rows: &[RowPlan], world: usize) -> Vec<Vec<usize>> {
    let per_rank = rows.len() / world;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(rows[i].tokens), i));
    let mut load = vec![0u64; world];
    let mut assigned: Vec<Vec<usize>> = vec![Vec::with_capacity(per_rank); world];
    for i in order {
        let rank =
            (0..world).filter(|&r| assigned[r].len() < per_rank).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        load[rank] += rows[i].tokens as u64;
        assigned[rank].push(i);
    }
    for a in &mut assigned {
        a.sort_unstable();
    }
    assigned
}
