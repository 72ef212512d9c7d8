//! Sub-groups of the world: `size` consecutive ranks (world ranks `g * size .. (g + 1) *
//! size`) that run collectives among themselves, as context parallelism's groups exchange
//! attention keys and values while FSDP keeps using the whole world.
//!
//! A backend with communicators of its own makes one for the group ([`Collective::split`]:
//! NCCL splits its communicator). The host backends have one channel for the world, so a
//! sub-group runs through it: its all-gather is the world's [`Op::GroupAllGather`], in which
//! every group gathers among itself in the same round.

use std::sync::Arc;
use std::time::Duration;

use crate::collective::{Collective, Membership, Op};
use crate::error::{DistError, Result};

/// This rank's group of `size` consecutive ranks, as a [`Collective`] whose rank is
/// `world.rank() % size` and whose world is `size`. `size == world.world()` is the world
/// itself, and `size == 1` a group of one whose collectives are copies. Every rank of the
/// world must call this at once, with the same `size`. `world` may itself be a group: the
/// groups within it are the whole world's groups of `size`.
///
/// On the host backends (threads, TCP) every group's collectives are rounds of the world's,
/// so every rank of the world must call the group collective at the same time (each in its
/// own group; the groups' lengths may differ). They are counted in the world's
/// [`Collective::bytes_moved`] and [`Collective::seconds_in_collectives`], not the group's,
/// on every backend: the world's counters are the job's whole traffic.
pub fn subgroup(world: &Arc<dyn Collective>, size: usize) -> Result<Arc<dyn Collective>> {
    let ranks = world.world();
    if size == 0 || !ranks.is_multiple_of(size) {
        return Err(DistError::Config(format!(
            "groups of {size} ranks do not divide the world of {ranks} ranks"
        )));
    }
    if size == ranks {
        return Ok(world.clone());
    }
    // A group of one never reaches the world: every default collective at world 1 is a copy.
    if size > 1 {
        if let Some(split) = world.split(size) {
            return split;
        }
    }
    Ok(Arc::new(ThroughWorld {
        member: Membership::new(world.rank() % size, size),
        world: world.clone(),
        size,
    }))
}

/// `op` as a group of `size` asks it of the world; an op with no grouped form (a
/// broadcast) is refused.
pub(crate) fn grouped(op: Op, size: usize) -> Result<Op> {
    op.within_groups(size).ok_or_else(|| {
        DistError::Unsupported(format!(
            "{op:?} within a sub-group of {size} ranks (sub-groups all-gather, reduce-scatter and all-reduce)"
        ))
    })
}

/// A sub-group on a host backend: its collectives are grouped collectives of the world.
struct ThroughWorld {
    member: Membership,
    world: Arc<dyn Collective>,
    size: usize,
}

impl Collective for ThroughWorld {
    fn membership(&self) -> &Membership {
        &self.member
    }

    fn timeout(&self) -> Option<Duration> {
        self.world.timeout()
    }

    /// Through the world's `exchange`, which counts and times it.
    fn transfer(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        self.world.exchange(grouped(op, self.size)?, contribution)
    }

    /// The world counts and times the group's collectives (see [`subgroup`]).
    fn exchange(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        self.transfer(op, contribution)
    }

    /// `size` divides this group's size, so the groups within it are the world's groups of
    /// `size`.
    fn split(&self, size: usize) -> Option<Result<Arc<dyn Collective>>> {
        Some(subgroup(&self.world, size))
    }

    fn confirm_outputs(&self) -> Result<()> {
        self.world.confirm_outputs()
    }
}
