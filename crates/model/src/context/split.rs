//! How a packed row's tokens are divided among the ranks of a context group.
//!
//! Causal attention makes a token's cost grow with its position in its document, so an
//! even count of tokens is not an even share of work. A long document is cut into `2N`
//! equal chunks and rank `i` keeps chunks `i` and `2N - 1 - i`: an early chunk and a late
//! one, whose costs add up to the same on every rank. Short documents stay whole (a chunk
//! of a document must see the keys of every chunk before it, held elsewhere; a whole one
//! needs nothing from the others) and are dealt out longest first to the rank that stays
//! the least loaded. Documents are cut, longest first, only until both the tokens and the
//! work are even within [`TOLERANCE`]. Nothing is padded.

/// How far above an even share the busiest rank may be, in tokens or in attention work,
/// before another document is cut.
pub const TOLERANCE: f64 = 0.02;

/// A stretch of one document: its tokens `start..start + len` (positions within the
/// document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub doc: usize,
    pub start: u32,
    pub len: u32,
}

/// Every rank's pieces of one packed row, each rank's in row order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextSplit {
    cu_seqlens: Vec<u32>,
    ranks: Vec<Vec<Piece>>,
}

/// The attention work of positions `start..end` of a document: each query sees the keys
/// up to and including its own position.
pub fn causal_work(start: u64, end: u64) -> u64 {
    (end * (end + 1) - start * (start + 1)) / 2
}

/// The busiest rank's share of a row, against an even `1 / N`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    /// The largest fraction of the row's tokens on one rank.
    pub tokens: f64,
    /// The largest fraction of the row's attention work on one rank.
    pub work: f64,
}

impl ContextSplit {
    /// Splits the row whose documents are `cu_seqlens` (as [`crate::PackedLayout`] takes
    /// them) over `ranks` ranks.
    pub fn new(cu_seqlens: &[u32], ranks: usize) -> Self {
        let lens: Vec<u32> = cu_seqlens.windows(2).map(|w| w[1] - w[0]).collect();
        let ranks = ranks.max(1);
        let mut longest_first: Vec<usize> = (0..lens.len()).collect();
        longest_first.sort_by_key(|&d| (std::cmp::Reverse(lens[d]), d));
        let total_tokens: u64 = lens.iter().map(|&l| l as u64).sum();
        // Documents longer than a rank's share cannot stay whole; then cut more, doubling
        // the step, until the row is even.
        let mut cut = lens.iter().filter(|&&l| l as u64 * ranks as u64 > total_tokens).count();
        let mut step = 1;
        loop {
            let split = Self::with_cuts(cu_seqlens, &lens, &longest_first[..cut], ranks);
            let Balance { tokens, work } = split.balance();
            let even = 1.0 / ranks as f64;
            let splittable = lens.iter().filter(|&&l| l > 1).count();
            if (tokens <= even * (1.0 + TOLERANCE) && work <= even * (1.0 + TOLERANCE)) || cut >= splittable {
                return split;
            }
            cut = (cut + step).min(splittable);
            step *= 2;
        }
    }

    /// The split that cuts the documents `cut` into `2N` chunks and deals out the rest.
    fn with_cuts(cu_seqlens: &[u32], lens: &[u32], cut: &[usize], ranks: usize) -> Self {
        let mut pieces = vec![Vec::new(); ranks];
        let (mut tokens, mut work) = (vec![0u64; ranks], vec![0u64; ranks]);
        let mut is_cut = vec![false; lens.len()];
        for &doc in cut {
            is_cut[doc] = true;
            let len = lens[doc] as u64;
            let bound = |j: usize| (len * j as u64 / (2 * ranks) as u64) as u32;
            for (rank, rank_pieces) in pieces.iter_mut().enumerate() {
                for chunk in [rank, 2 * ranks - 1 - rank] {
                    let (start, end) = (bound(chunk), bound(chunk + 1));
                    if end > start {
                        rank_pieces.push(Piece { doc, start, len: end - start });
                        tokens[rank] += (end - start) as u64;
                        work[rank] += causal_work(start as u64, end as u64);
                    }
                }
            }
        }
        let total_tokens: u64 = lens.iter().map(|&l| l as u64).sum::<u64>().max(1);
        let total_work: u64 = lens.iter().map(|&l| causal_work(0, l as u64)).sum::<u64>().max(1);
        // Whole documents, heaviest first, each to the rank whose larger share (of tokens
        // or of work) stays the smallest.
        let mut whole: Vec<usize> = (0..lens.len()).filter(|&d| !is_cut[d] && lens[d] > 0).collect();
        whole.sort_by_key(|&d| (std::cmp::Reverse(lens[d]), d));
        for doc in whole {
            let (len, cost) = (lens[doc] as u64, causal_work(0, lens[doc] as u64));
            let load = |r: usize| {
                let t = (tokens[r] + len) as f64 / total_tokens as f64;
                let w = (work[r] + cost) as f64 / total_work as f64;
                (t.max(w), r)
            };
            let rank = (0..ranks)
                .map(load)
                .min_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal))
                .map_or(0, |(_, r)| r);
            pieces[rank].push(Piece { doc, start: 0, len: lens[doc] });
            tokens[rank] += len;
            work[rank] += cost;
        }
        for rank_pieces in &mut pieces {
            rank_pieces.sort_by_key(|p| (p.doc, p.start));
        }
        Self { cu_seqlens: cu_seqlens.to_vec(), ranks: pieces }
    }

    /// The row's document bounds.
    pub fn cu_seqlens(&self) -> &[u32] {
        &self.cu_seqlens
    }

    pub fn ranks(&self) -> usize {
        self.ranks.len()
    }

    /// Rank `rank`'s pieces, in row order.
    pub fn pieces(&self, rank: usize) -> &[Piece] {
        &self.ranks[rank]
    }

    /// Tokens rank `rank` holds.
    pub fn tokens(&self, rank: usize) -> usize {
        self.ranks[rank].iter().map(|p| p.len as usize).sum()
    }

    /// The most tokens any rank holds: the rows each rank gives the group's all-gather.
    pub fn max_tokens(&self) -> usize {
        (0..self.ranks()).map(|r| self.tokens(r)).max().unwrap_or(0)
    }

    /// The busiest rank's share of the row's tokens and of its attention work.
    pub fn balance(&self) -> Balance {
        let work_of = |pieces: &[Piece]| -> u64 {
            pieces.iter().map(|p| causal_work(p.start as u64, (p.start + p.len) as u64)).sum()
        };
        let total_tokens: usize = (0..self.ranks()).map(|r| self.tokens(r)).sum();
        let total_work: u64 = self.ranks.iter().map(|p| work_of(p)).sum();
        let share =
            |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 1.0 / self.ranks() as f64 };
        Balance {
            tokens: (0..self.ranks())
                .map(|r| share(self.tokens(r) as f64, total_tokens as f64))
                .fold(0.0, f64::max),
            work: self.ranks.iter().map(|p| share(work_of(p) as f64, total_work as f64)).fold(0.0, f64::max),
        }
    }

    /// Where each token of the row lives: `(rank, index among that rank's tokens)`.
    pub fn owners(&self) -> Vec<(u32, u32)> {
        let mut owners = vec![(0, 0); self.cu_seqlens.last().map_or(0, |&e| e as usize)];
        for (rank, pieces) in self.ranks.iter().enumerate() {
            let mut local = 0u32;
            for p in pieces {
                let first = (self.cu_seqlens[p.doc] + p.start) as usize;
                for t in 0..p.len {
                    owners[first + t as usize] = (rank as u32, local);
                    local += 1;
                }
            }
        }
        owners
    }
}
