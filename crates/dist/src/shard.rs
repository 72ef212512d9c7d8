//! Flat sharding of a unit of parameters (a layer, the embedding, the head) over `world`
//! ranks, as FSDP does: every parameter is flattened and padded to a multiple of `world`;
//! rank r holds the r-th slice of each, concatenated, so one all-gather brings a whole
//! unit and one reduce-scatter spreads its gradients (the tensor side of this layout is
//! the trainer's `sharded::unit_shard`). Each rank's slice stays a slice of
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
}
