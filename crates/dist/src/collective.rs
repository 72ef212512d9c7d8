//! The collectives FSDP needs, over host buffers, and the arithmetic every backend shares:
//! each backend moves the ranks' contributions; [`combine`] turns them into each rank's
//! reply, summing in rank order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};

use crate::error::{DistError, Result};

/// What a rank asks of the group. Every rank must ask the same thing at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Each rank's f32 shard; every rank gets all of them in rank order.
    AllGather,
    /// `world` f32 blocks per rank; rank r gets the sum over ranks of block r.
    ReduceScatter,
    /// f64 values; every rank gets their sum over ranks.
    AllReduce,
    /// Bytes of `root`; every rank gets them.
    Broadcast { root: usize },
    /// [`Op::AllGather`] within each group of `size` consecutive ranks (ranks
    /// `g * size .. (g + 1) * size`): how a sub-group gathers through the world, every group
    /// at once. Shards have one length within a group, not across groups.
    GroupAllGather { size: usize },
    /// [`Op::ReduceScatter`] within each group of `size` consecutive ranks.
    GroupReduceScatter { size: usize },
    /// [`Op::AllReduce`] within each group of `size` consecutive ranks (a sub-group's barrier).
    GroupAllReduce { size: usize },
}

impl Op {
    /// The op's kind and its one parameter (a broadcast's root, a group's size): what the
    /// TCP backend's frames carry.
    pub fn code(self) -> (u8, u32) {
        match self {
            Op::AllGather => (1, 0),
            Op::ReduceScatter => (2, 0),
            Op::AllReduce => (3, 0),
            Op::Broadcast { root } => (4, root as u32),
            Op::GroupAllGather { size } => (5, size as u32),
            Op::GroupReduceScatter { size } => (6, size as u32),
            Op::GroupAllReduce { size } => (7, size as u32),
        }
    }

    pub fn from_code(kind: u8, parameter: u32) -> Option<Op> {
        let parameter = parameter as usize;
        Some(match kind {
            1 => Op::AllGather,
            2 => Op::ReduceScatter,
            3 => Op::AllReduce,
            4 => Op::Broadcast { root: parameter },
            5 => Op::GroupAllGather { size: parameter },
            6 => Op::GroupReduceScatter { size: parameter },
            7 => Op::GroupAllReduce { size: parameter },
            _ => return None,
        })
    }

    /// This op run by every group of `size` consecutive ranks at once: what a sub-group asks
    /// of the world. `None` for an op with no grouped form (a broadcast, an op already
    /// grouped).
    pub fn within_groups(self, size: usize) -> Option<Op> {
        match self {
            Op::AllGather => Some(Op::GroupAllGather { size }),
            Op::ReduceScatter => Some(Op::GroupReduceScatter { size }),
            Op::AllReduce => Some(Op::GroupAllReduce { size }),
            _ => None,
        }
    }

    /// The size of the groups a grouped op runs within; `None` for an op of the whole world.
    pub fn group_size(self) -> Option<usize> {
        match self {
            Op::GroupAllGather { size } | Op::GroupReduceScatter { size } | Op::GroupAllReduce { size } => {
                Some(size)
            }
            _ => None,
        }
    }
}

/// Each rank's reply, from every rank's contribution (index = rank). A grouped op combines
/// each group of consecutive ranks on its own: lengths must agree within a group only.
pub fn combine(op: Op, contributions: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let Some(size) = op.group_size() else {
        return combine_ranks(op, contributions, 0).map_err(DistError::Mismatch);
    };
    let world = contributions.len();
    if size == 0 || !world.is_multiple_of(size) {
        return Err(DistError::Config(format!("groups of {size} ranks do not divide a world of {world}")));
    }
    let mut replies = Vec::with_capacity(world);
    for (group, members) in contributions.chunks(size).enumerate() {
        let first = group * size;
        let within = combine_ranks(op, members, first).map_err(|why| {
            DistError::Mismatch(format!("group {group} (ranks {first}..={}): {why}", first + size - 1))
        })?;
        replies.extend(within);
    }
    Ok(replies)
}

/// The replies of the ranks `first..first + contributions.len()`, which run `op` among
/// themselves (a grouped op as its plain form); an error names the ranks by their number
/// in the world.
fn combine_ranks(
    op: Op,
    contributions: &[Vec<u8>],
    first: usize,
) -> std::result::Result<Vec<Vec<u8>>, String> {
    let ranks = contributions.len();
    let same_len = |what: &str| -> std::result::Result<usize, String> {
        let len = contributions.first().map_or(0, Vec::len);
        match contributions.iter().position(|c| c.len() != len) {
            Some(r) => Err(format!(
                "{what}: rank {first} gives {len} bytes, rank {} {}",
                first + r,
                contributions[r].len()
            )),
            None => Ok(len),
        }
    };
    Ok(match op {
        Op::AllGather | Op::GroupAllGather { .. } => {
            same_len("all-gather")?;
            vec![contributions.concat(); ranks]
        }
        Op::ReduceScatter | Op::GroupReduceScatter { .. } => {
            let len = same_len("reduce-scatter")?;
            if len % (4 * ranks) != 0 {
                return Err(format!("reduce-scatter of {len} bytes over {ranks} ranks"));
            }
            let block = len / 4 / ranks;
            let inputs: Vec<&[f32]> = contributions.iter().map(|c| floats(c)).collect();
            (0..ranks)
                .map(|r| {
                    let mut sum = inputs[0][r * block..(r + 1) * block].to_vec();
                    for input in &inputs[1..] {
                        sum.iter_mut().zip(&input[r * block..(r + 1) * block]).for_each(|(s, x)| *s += x);
                    }
                    bytemuck::cast_slice(&sum).to_vec()
                })
                .collect()
        }
        Op::AllReduce | Op::GroupAllReduce { .. } => {
            let len = same_len("all-reduce")?;
            let mut sum = vec![0f64; len / 8];
            for c in contributions {
                let values: Vec<f64> =
                    c.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).collect();
                sum.iter_mut().zip(values).for_each(|(s, x)| *s += x);
            }
            let bytes: Vec<u8> = sum.iter().flat_map(|x| x.to_le_bytes()).collect();
            vec![bytes; ranks]
        }
        Op::Broadcast { root } => {
            let data =
                contributions.get(root).ok_or_else(|| format!("broadcast from rank {root} of {ranks}"))?;
            vec![data.clone(); ranks]
        }
    })
}

/// The bytes a collective moves as NCCL's bus accounting counts them: the whole gathered
/// or reduced buffer (so one all-gather plus one reduce-scatter of every parameter per
/// step is 2x the parameter bytes, and ZeRO-3's two gathers and one scatter 3x).
pub fn logical_bytes(op: Op, contribution: usize, world: usize) -> u64 {
    match op {
        Op::AllGather => (contribution * world) as u64,
        Op::GroupAllGather { size } => (contribution * size) as u64,
        _ => contribution as u64,
    }
}

fn floats(bytes: &[u8]) -> &[f32] {
    bytemuck::cast_slice(bytes)
}

/// Who a rank is in its group, how many bytes it has handed to collectives and how long
/// it waited in them: what every backend keeps the same way.
#[derive(Debug)]
pub struct Membership {
    rank: usize,
    world: usize,
    moved: AtomicU64,
    busy_nanos: AtomicU64,
}

impl Membership {
    pub const fn new(rank: usize, world: usize) -> Self {
        Self { rank, world, moved: AtomicU64::new(0), busy_nanos: AtomicU64::new(0) }
    }

    /// Counts a blocking collective (see [`Membership::count`]) and the time `run` takes:
    /// the metrics' time in collectives.
    pub fn record<T>(&self, op: Op, contribution: usize, run: impl FnOnce() -> T) -> T {
        self.count(op, contribution);
        let started = Instant::now();
        let out = run();
        self.busy_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }

    /// Seconds spent in [`Membership::record`]ed collectives.
    pub fn seconds_busy(&self) -> f64 {
        self.busy_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Counts a collective of `contribution` bytes from this rank (see [`logical_bytes`]).
    pub fn count(&self, op: Op, contribution: usize) {
        self.moved.fetch_add(logical_bytes(op, contribution, self.world), Ordering::Relaxed);
    }

    pub fn bytes_moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
}

/// A group of ranks. Buffers are host f32 (f64 for all-reduce); sums run in rank order.
pub trait Collective: Send + Sync {
    /// This rank's place in the group; the accessors below read it.
    fn membership(&self) -> &Membership;

    fn rank(&self) -> usize {
        self.membership().rank
    }

    fn world(&self) -> usize {
        self.membership().world
    }

    /// How long a collective waits for the other ranks before it fails (none: no limit).
    /// Work that keeps the others waiting longer must send them something meanwhile.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// A communicator of this rank's group of `size` consecutive ranks that the backend
    /// makes itself (NCCL splits its communicator), or `None`: the group then runs through
    /// this one's collectives. Call [`crate::group::subgroup`], which checks `size` and calls
    /// this on every rank at once.
    fn split(&self, _size: usize) -> Option<Result<Arc<dyn Collective>>> {
        None
    }

    /// Moves this rank's contribution and returns its reply (see [`combine`]): what each
    /// backend implements.
    fn transfer(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>>;

    /// [`Collective::transfer`], counted and timed in this rank's [`Membership`].
    fn exchange(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        self.membership().record(op, contribution.len(), || self.transfer(op, contribution))
    }

    /// Payload bytes this rank has handed to collectives, for the benchmark.
    fn bytes_moved(&self) -> u64 {
        self.membership().bytes_moved()
    }

    /// Seconds this rank has waited in blocking collectives (the host ones; NCCL's run
    /// asynchronously on their own stream and are not counted).
    fn seconds_in_collectives(&self) -> f64 {
        self.membership().seconds_busy()
    }

    /// `out` (`world * shard.len()`) receives every rank's shard, in rank order.
    fn all_gather(&self, shard: &[f32], out: &mut [f32]) -> Result<()> {
        if self.world() == 1 {
            out.copy_from_slice(shard);
            return Ok(());
        }
        let reply = self.exchange(Op::AllGather, bytemuck::cast_slice(shard).to_vec())?;
        out.copy_from_slice(bytemuck::cast_slice(&reply));
        Ok(())
    }

    /// `input` is `world` blocks of `out.len()`; `out` receives the sum over ranks of block
    /// `rank`.
    fn reduce_scatter(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        if self.world() == 1 {
            out.copy_from_slice(input);
            return Ok(());
        }
        let reply = self.exchange(Op::ReduceScatter, bytemuck::cast_slice(input).to_vec())?;
        out.copy_from_slice(bytemuck::cast_slice(&reply));
        Ok(())
    }

    /// Sums `values` over ranks, in place.
    fn all_reduce(&self, values: &mut [f64]) -> Result<()> {
        if self.world() == 1 {
            return Ok(());
        }
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        let reply = self.exchange(Op::AllReduce, bytes)?;
        for (v, b) in values.iter_mut().zip(reply.chunks_exact(8)) {
            *v = f64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        }
        Ok(())
    }

    /// `root`'s bytes, on every rank.
    fn broadcast(&self, data: Vec<u8>, root: usize) -> Result<Vec<u8>> {
        if self.world() == 1 {
            return Ok(data);
        }
        self.exchange(Op::Broadcast { root }, data)
    }

    /// Every rank's 1-D `shard`, concatenated in rank order, on the shard's device and in
    /// its dtype. This default goes through host memory in f32 (exact for f32, bf16 and
    /// f16); NCCL overrides it to gather on the device without a copy to the host.
    fn all_gather_tensor(&self, shard: &Tensor) -> Result<Tensor> {
        if self.world() == 1 {
            return Ok(shard.clone());
        }
        let host = shard.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let mut out = vec![0.0; host.len() * self.world()];
        self.all_gather(&host, &mut out)?;
        Ok(Tensor::from_vec(out, host.len() * self.world(), shard.device())?.to_dtype(shard.dtype())?)
    }

    /// `blocks` (1-D f32, `world` equal blocks, one per rank in rank order): the sum over
    /// ranks of block `rank`, on the same device. NCCL overrides the host round trip.
    fn reduce_scatter_tensor(&self, blocks: &Tensor) -> Result<Tensor> {
        if self.world() == 1 {
            return Ok(blocks.clone());
        }
        let host = blocks.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if !host.len().is_multiple_of(self.world()) {
            return Err(DistError::Mismatch(format!(
                "reduce-scatter of {} values over {} ranks",
                host.len(),
                self.world()
            )));
        }
        let mut out = vec![0.0; host.len() / self.world()];
        self.reduce_scatter(&host, &mut out)?;
        let len = out.len();
        Ok(Tensor::from_vec(out, len, blocks.device())?)
    }

    /// The element-wise sum over ranks of `values` (any shape; f32 or f64), on the same
    /// device and in the same dtype: the gradient norm's sum of squares stays on the
    /// device until its one read. This default sums through host memory in f64; NCCL
    /// overrides it with an all-reduce on the device.
    fn all_reduce_tensor(&self, values: &Tensor) -> Result<Tensor> {
        if !matches!(values.dtype(), DType::F32 | DType::F64) {
            return Err(DistError::Mismatch(format!(
                "an all-reduce of {:?} (f32 or f64 only)",
                values.dtype()
            )));
        }
        if self.world() == 1 {
            return Ok(values.clone());
        }
        let mut host = values.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        self.all_reduce(&mut host)?;
        let summed = Tensor::from_vec(host, values.shape(), values.device())?;
        Ok(summed.to_dtype(values.dtype())?)
    }

    /// Fails when what the collectives issued so far wrote may be partial or wrong: call it
    /// after reading a collective's output to the host (a gradient norm) and before using
    /// what was read. NCCL's collectives run asynchronously and one aborted halfway (a peer
    /// lost) leaves partial output that a read returns all the same, so NCCL checks for an
    /// abort and for NCCL's and CUDA's errors; the host backends' collectives are complete,
    /// and checked, when they return.
    fn confirm_outputs(&self) -> Result<()> {
        Ok(())
    }

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()> {
        self.all_reduce(&mut [0.0]).map(|_| ())
    }
}

/// A group of one: every collective is a copy.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

/// Rank 0 of 1, shared by every `Local`.
static ALONE: Membership = Membership::new(0, 1);

impl Collective for Local {
    fn membership(&self) -> &Membership {
        &ALONE
    }
    fn transfer(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        Ok(combine(op, &[contribution])?.remove(0))
    }
}
