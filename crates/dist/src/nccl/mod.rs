//! The NCCL backend: one process per GPU. The ranks first meet over the TCP backend,
//! which carries rank 0's NCCL unique id to the others (the small store at
//! `MASTER_ADDR:MASTER_PORT`) and afterwards the job's small host collectives (loss
//! totals, barriers, a checkpoint's path: a few bytes, with nothing on the GPU to wait
//! for). Tensors (all-gather, reduce-scatter, all-reduce) move through NCCL on a stream of their
//! own, so that FSDP's prefetched all-gather overlaps the compute stream's work; cudarc's
//! event tracking makes a reader of a gathered tensor wait for the gather, and every
//! collective first waits for the compute stream's work so far (its inputs). Each input is
//! kept until its collective is done ([`KeptUntilDone`](crate::inflight::KeptUntilDone)), or freeing it would make the
//! compute stream wait for the collective.
//!
//! NCCL blocks forever when a peer dies. A [`Watchdog`](crate::watchdog::Watchdog) thread therefore follows every
//! collective through a CUDA event: one not complete within the timeout (or an error NCCL
//! reports) aborts the communicator, and the next call fails, after asking the TCP group
//! which rank is gone. The communicator is non-blocking (`communicator.rs`), so that the
//! watchdog's probe and abort never wait for a call in progress. An aborted collective
//! leaves partial output that a read returns all the same, so reads of collectives' outputs
//! are confirmed ([`Collective::confirm_outputs`]) before they are used.
//!
//! A sub-group ([`crate::group::subgroup`]) is a communicator split from the world's
//! (`ncclCommSplit`), non-blocking like it; it shares the world's stream, watchdog and TCP
//! group (`engine.rs`), and its host collectives are the TCP group's grouped ones.

mod communicator;
mod engine;

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Shape, Tensor};
use cudarc::nccl::sys;
use half::{bf16, f16};

use crate::collective::{Collective, Membership, Op};
use crate::error::{DistError, Result};
use crate::group::grouped;
use crate::tcp::TcpRank;
use communicator::Communicator;
use engine::{Engine, EventDone};

/// One rank of an NCCL group: the world's, or a group split from it.
pub struct NcclRank {
    engine: Arc<Engine>,
    comm: Arc<Communicator>,
    /// This rank's place in this communicator; the bytes are counted in the engine's.
    member: Membership,
    /// The size of the groups this communicator was split into; `None`: the world's.
    group: Option<usize>,
}

impl NcclRank {
    /// Sets up the NCCL communicator on `device` over a TCP group that has already met
    /// (see [`TcpRank::connect`]): rank 0's unique id travels through it, and its timeout
    /// bounds the setup and every collective.
    pub fn over(control: TcpRank, device: &CudaDevice) -> Result<Self> {
        let member = Membership::new(control.rank(), control.world());
        let (engine, comm) = Engine::start(control, device)?;
        Ok(Self { engine, comm, member, group: None })
    }

    /// `op` as the world sees it: the world's counters and its TCP group run a group's
    /// collectives as grouped ones.
    fn in_world(&self, op: Op) -> Result<Op> {
        match self.group {
            Some(size) => grouped(op, size),
            None => Ok(op),
        }
    }

    /// Counts a collective of `tensor`'s bytes in the world's count.
    fn count(&self, op: Op, tensor: &Tensor) -> Result<()> {
        let bytes = tensor.elem_count() * tensor.dtype().size_in_bytes();
        self.engine.counted.count(self.in_world(op)?, bytes);
        Ok(())
    }

    /// A collective's name in errors and the watchdog's messages.
    fn name(&self, what: &str) -> String {
        match self.group {
            Some(size) => format!("NCCL {what} within groups of {size}"),
            None => format!("NCCL {what}"),
        }
    }

    /// Runs one collective from a tensor's `n` elements into a new buffer of `out_len`;
    /// `launch` gets the two device pointers and `n`.
    fn collective_into<T: NcclElement>(
        &self,
        what: &'static str,
        storage: &CudaStorage,
        layout: &Layout,
        out_len: usize,
        launch: impl FnOnce(
            *const c_void,
            *mut c_void,
            usize,
            sys::ncclComm_t,
            sys::cudaStream_t,
        ) -> sys::ncclResult_t,
    ) -> Result<CudaStorage> {
        let n = layout.shape().elem_count();
        let start = layout.start_offset();
        let input = storage.as_cuda_slice::<T>()?.slice(start..start + n);
        // On the compute stream, which owns the tensor from here on: candle hands a buffer
        // to its kernels through the buffer's own stream, which must therefore wait for
        // NCCL's write (recorded in `issue` on NCCL's stream). SAFETY: each collective
        // writes every element of its output before anything reads it.
        let engine = &self.engine;
        let mut output = unsafe { engine.device.alloc::<T>(out_len) }?;
        let name = self.name(what);
        {
            let (src, _read) = input.device_ptr(&engine.stream);
            let (dst, _write) = output.device_ptr_mut(&engine.stream);
            engine.issue(&self.comm, &name, |comm, s| {
                launch(src as *const c_void, dst as *mut c_void, n, comm, s)
            })?;
        }
        // The input's read and the output's write (what the compute stream waits for) are
        // recorded as the two guards above end, and cudarc keeps an error there for later.
        engine.cuda_ok(&name)?;
        Ok(CudaStorage::wrap_cuda_slice(output, engine.device.clone()))
    }

    fn gather_slice<T: NcclElement>(&self, storage: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        let out_len = layout.shape().elem_count() * self.world();
        // SAFETY (here and below): the buffers hold the counts NCCL is given, on this
        // rank's device.
        self.collective_into::<T>("all-gather", storage, layout, out_len, |src, dst, n, comm, s| unsafe {
            sys::ncclAllGather(src, dst, n, T::NCCL, comm, s)
        })
    }

    fn reduce_scatter_slice(&self, storage: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        let out_len = layout.shape().elem_count() / self.world();
        self.collective_into::<f32>(
            "reduce-scatter",
            storage,
            layout,
            out_len,
            |src, dst, _, comm, s| unsafe {
                sys::ncclReduceScatter(src, dst, out_len, f32::NCCL, sys::ncclRedOp_t::ncclSum, comm, s)
            },
        )
    }

    fn all_reduce_slice<T: NcclElement>(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> Result<CudaStorage> {
        let out_len = layout.shape().elem_count();
        self.collective_into::<T>("all-reduce", storage, layout, out_len, |src, dst, n, comm, s| unsafe {
            sys::ncclAllReduce(src, dst, n, T::NCCL, sys::ncclRedOp_t::ncclSum, comm, s)
        })
    }

    fn on_device(&self, tensor: &Tensor, what: &str) -> Result<()> {
        match tensor.device() {
            candle_core::Device::Cuda(d) if d.same_device(&self.engine.device) => Ok(()),
            other => {
                Err(DistError::Config(format!("NCCL {what} of a tensor on {other:?}, not this rank's GPU")))
            }
        }
    }
}

/// Element types NCCL moves.
trait NcclElement:
    candle_core::cuda_backend::CudaDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr
{
    const NCCL: sys::ncclDataType_t;
}
impl NcclElement for f32 {
    const NCCL: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat32;
}
impl NcclElement for f64 {
    const NCCL: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat64;
}
impl NcclElement for bf16 {
    const NCCL: sys::ncclDataType_t = sys::ncclDataType_t::ncclBfloat16;
}
impl NcclElement for f16 {
    const NCCL: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat16;
}

/// The collectives as candle ops, so that their outputs are tensors on the device.
struct TensorCollective<'a> {
    rank: &'a NcclRank,
    kind: Kind,
    /// The typed error behind a failure: candle's error keeps only its text.
    failed: RefCell<Option<DistError>>,
}

#[derive(Clone, Copy)]
enum Kind {
    AllGather,
    ReduceScatter,
    AllReduce,
}

impl CustomOp1 for TensorCollective<'_> {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::AllGather => "nccl-all-gather",
            Kind::ReduceScatter => "nccl-reduce-scatter",
            Kind::AllReduce => "nccl-all-reduce",
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: NCCL moves GPU tensors only", self.name())
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rank, n) = (self.rank, layout.shape().elem_count());
        let wrap = |e: DistError| {
            let message = candle_core::Error::Msg(e.to_string());
            *self.failed.borrow_mut() = Some(e);
            message
        };
        match self.kind {
            Kind::AllGather => {
                let out = match storage.dtype() {
                    DType::F32 => rank.gather_slice::<f32>(storage, layout),
                    DType::BF16 => rank.gather_slice::<bf16>(storage, layout),
                    DType::F16 => rank.gather_slice::<f16>(storage, layout),
                    other => candle_core::bail!("nccl-all-gather of {other:?}"),
                };
                Ok((out.map_err(wrap)?, Shape::from(n * rank.world())))
            }
            Kind::ReduceScatter => {
                if storage.dtype() != DType::F32 || !n.is_multiple_of(rank.world()) {
                    candle_core::bail!(
                        "nccl-reduce-scatter of {n} {:?} over {} ranks",
                        storage.dtype(),
                        rank.world()
                    )
                }
                Ok((rank.reduce_scatter_slice(storage, layout).map_err(wrap)?, Shape::from(n / rank.world())))
            }
            Kind::AllReduce => {
                let out = match storage.dtype() {
                    DType::F32 => rank.all_reduce_slice::<f32>(storage, layout),
                    DType::F64 => rank.all_reduce_slice::<f64>(storage, layout),
                    other => candle_core::bail!("nccl-all-reduce of {other:?}"),
                };
                Ok((out.map_err(wrap)?, layout.shape().clone()))
            }
        }
    }
}

impl NcclRank {
    /// Runs a collective on `input` (contiguous, on this rank's GPU) and keeps `input`
    /// until the collective is done: freed at once (FSDP hands temporaries), its buffer
    /// would make the compute stream wait for the collective (see [`KeptUntilDone`]).
    fn run(&self, input: Tensor, kind: Kind) -> Result<Tensor> {
        let op = TensorCollective { rank: self, kind, failed: RefCell::new(None) };
        let output =
            input.apply_op1_no_bwd(&op).map_err(|e| op.failed.take().unwrap_or(DistError::Tensor(e)))?;
        let engine = &self.engine;
        let done = engine.stream.record_event(None).map_err(|e| {
            engine.fault(DistError::Cuda { what: format!("NCCL {}", op.name()), message: e.to_string() })
        })?;
        engine.inputs.keep(input, Box::new(EventDone(done)));
        Ok(output)
    }
}

impl Collective for NcclRank {
    fn membership(&self) -> &Membership {
        &self.member
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.engine.control.timeout())
    }

    /// Splits into groups of `size` consecutive ranks. A group splits the same way: `size`
    /// divides its size, so the groups within it are the world's groups of `size` (the
    /// engine's color and key are world ranks).
    fn split(&self, size: usize) -> Option<Result<Arc<dyn Collective>>> {
        let split = self.engine.split(&self.comm, size).map(|comm| {
            let member = Membership::new(self.rank() % size, size);
            let group = NcclRank { engine: self.engine.clone(), comm, member, group: Some(size) };
            Arc::new(group) as Arc<dyn Collective>
        });
        Some(split)
    }

    /// Host collectives (small: loss totals, barriers, paths) go over TCP, a group's as the
    /// world's grouped ones. A contribution may have been read from a collective's output
    /// (the loss total, computed with gathered weights): the check before refuses it if that
    /// collective may have been aborted halfway, and the one after refuses a reply when a
    /// collective failed meanwhile.
    fn transfer(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        let op = self.in_world(op)?;
        self.engine.healthy("a host collective")?;
        let reply = self.engine.control.exchange(op, contribution)?;
        self.engine.healthy("a host collective")?;
        Ok(reply)
    }

    /// The TCP group counts and times the host collectives itself.
    fn exchange(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        self.transfer(op, contribution)
    }

    /// The world's count holds its groups' (see [`crate::group::subgroup`]).
    fn bytes_moved(&self) -> u64 {
        match self.group {
            Some(_) => 0,
            None => self.engine.counted.bytes_moved() + self.engine.control.bytes_moved(),
        }
    }

    fn seconds_in_collectives(&self) -> f64 {
        match self.group {
            Some(_) => 0.0,
            None => self.engine.control.seconds_in_collectives(),
        }
    }

    /// Host shards (a checkpoint's weights) travel through NCCL too.
    fn all_gather(&self, shard: &[f32], out: &mut [f32]) -> Result<()> {
        let device = candle_core::Device::Cuda(self.engine.device.clone());
        let gathered = self.all_gather_tensor(&Tensor::from_slice(shard, shard.len(), &device)?)?;
        let gathered = gathered.to_vec1::<f32>()?;
        self.confirm_outputs()?;
        out.copy_from_slice(&gathered);
        Ok(())
    }

    fn reduce_scatter(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let device = candle_core::Device::Cuda(self.engine.device.clone());
        let mine = self.reduce_scatter_tensor(&Tensor::from_slice(input, input.len(), &device)?)?;
        let mine = mine.to_vec1::<f32>()?;
        self.confirm_outputs()?;
        out.copy_from_slice(&mine);
        Ok(())
    }

    fn all_gather_tensor(&self, shard: &Tensor) -> Result<Tensor> {
        self.on_device(shard, "all-gather")?;
        self.count(Op::AllGather, shard)?;
        self.run(shard.contiguous()?, Kind::AllGather)
    }

    fn reduce_scatter_tensor(&self, blocks: &Tensor) -> Result<Tensor> {
        self.on_device(blocks, "reduce-scatter")?;
        self.count(Op::ReduceScatter, blocks)?;
        self.run(blocks.contiguous()?, Kind::ReduceScatter)
    }

    fn all_reduce_tensor(&self, values: &Tensor) -> Result<Tensor> {
        self.on_device(values, "all-reduce")?;
        self.count(Op::AllReduce, values)?;
        self.run(values.contiguous()?, Kind::AllReduce)
    }

    /// A read that raced an abort returns partial data: the abort (or NCCL's or CUDA's
    /// error) is found here, before the data is used.
    fn confirm_outputs(&self) -> Result<()> {
        let engine = &self.engine;
        if engine.stream.context().bind_to_thread().is_ok() {
            engine.inputs.release_done();
        }
        engine.healthy(&format!("the read of {}'s output", engine.last()))
    }
}
