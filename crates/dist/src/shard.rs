//! Flat sharding of a unit of parameters (a layer, the embedding, the head) over `world`
//! ranks, as FSDP does: every parameter is flattened and padded to a multiple of `world`;
//! rank r holds the r-th slice of each, concatenated, so one all-gather brings a whole
//! unit and one reduce-scatter spreads its gradients. Each rank's slice stays a slice of
//! one parameter, so per-parameter rules (no weight decay on norms) still apply.

use std::ops::Range;

/// The elements of a parameter of `numel` elements that `rank` of `world` holds.
pub fn owned(numel: usize, world: usize, rank: usize) -> Range<usize> {
    let len = numel.div_ceil(world.max(1));
    (rank * len).min(numel)..((rank + 1) * len).min(numel)
}

/// The parameters of a unit and their sizes, for a world size.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatUnit {
    pub params: Vec<(String, usize)>,
    pub world: usize,
}

impl FlatUnit {
    pub fn new(params: Vec<(String, usize)>, world: usize) -> Self {
        Self { params, world: world.max(1) }
    }

    /// Elements of parameter `p` each rank holds (the last rank's slice is padded).
    pub fn slice_len(&self, p: usize) -> usize {
        self.params[p].1.div_ceil(self.world)
    }

    /// Elements of the whole unit each rank holds.
    pub fn shard_len(&self) -> usize {
        (0..self.params.len()).map(|p| self.slice_len(p)).sum()
    }

    /// Where parameter `p`'s slice sits within a rank's shard.
    pub fn slice_in_shard(&self, p: usize) -> Range<usize> {
        let start: usize = (0..p).map(|q| self.slice_len(q)).sum();
        start..start + self.slice_len(p)
    }

    /// The elements of parameter `p` (unpadded) that `rank` holds.
    pub fn owned(&self, p: usize, rank: usize) -> Range<usize> {
        owned(self.params[p].1, self.world, rank)
    }

    /// `rank`'s shard of full parameters (`full[p]` of `params[p].1` elements), padded with 0.
    pub fn shard_of(&self, full: &[&[f32]], rank: usize) -> Vec<f32> {
        let mut shard = vec![0.0; self.shard_len()];
        for (p, values) in full.iter().enumerate().take(self.params.len()) {
            let owned = self.owned(p, rank);
            let at = self.slice_in_shard(p).start;
            shard[at..at + owned.len()].copy_from_slice(&values[owned]);
        }
        shard
    }

    /// The input of a reduce-scatter: every rank's shard of `full`, in rank order.
    pub fn blocks_of(&self, full: &[&[f32]]) -> Vec<f32> {
        (0..self.world).flat_map(|r| self.shard_of(full, r)).collect()
    }

    /// The full parameters from an all-gather's output (every rank's shard in rank order).
    pub fn unpack(&self, gathered: &[f32]) -> Vec<Vec<f32>> {
        let shard_len = self.shard_len();
        (0..self.params.len())
            .map(|p| {
                let within = self.slice_in_shard(p);
                let mut full = Vec::with_capacity(self.params[p].1);
                for r in 0..self.world {
                    let owned = self.owned(p, r);
                    let at = r * shard_len + within.start;
                    full.extend_from_slice(&gathered[at..at + owned.len()]);
                }
                full
            })
            .collect()
    }
}
