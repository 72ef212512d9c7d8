//! Flat sharding of a unit of parameters (a layer, the embedding, the head) over `world`
//! ranks, as FSDP does: every parameter is flattened and padded to a multiple of `world`;
//! rank r holds the r-th slice of each, concatenated, so one all-gather brings a whole
//! unit and one reduce-scatter spreads its gradients (the tensor side of this layout is
//! [`super::unit_shard`]). Each rank's slice stays a slice of
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

#[cfg(test)]
mod tests {
    use super::FlatUnit;

    #[test]
    fn flat_shards_give_every_element_one_owner_and_slices_in_order() {
        let params = vec![("a".to_string(), 7), ("norm".to_string(), 1), ("b".to_string(), 12)];
        for world in [1, 2, 3, 4, 8] {
            let unit = FlatUnit::new(params.clone(), world);
            let owned: usize = (0..world).map(|r| unit.owned(2, r).len()).sum();
            assert_eq!(owned, 12, "every element has exactly one owner");
            let slices: Vec<_> = (0..params.len()).map(|p| unit.slice_in_shard(p)).collect();
            assert!(slices.windows(2).all(|w| w[0].end == w[1].start), "slices follow one another");
            assert_eq!(slices.last().unwrap().end, unit.shard_len());
        }
    }
}
