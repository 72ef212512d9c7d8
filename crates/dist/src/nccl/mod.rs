//! The NCCL backend: one process per GPU. The ranks first meet over the TCP backend,
//! which carries rank 0's NCCL unique id to the others (the small store at
//! `MASTER_ADDR:MASTER_PORT`) and afterwards the job's small host collectives (loss
//! totals, barriers, a checkpoint's path: a few bytes, with nothing on the GPU to wait
//! for). Tensors (all-gather, reduce-scatter, all-reduce) move through NCCL on a stream of their
//! own, so that FSDP's prefetched all-gather overlaps the compute stream's work; cudarc's
//! event tracking makes a reader of a gathered tensor wait for the gather, and every
//! collective first waits for the compute stream's work so far (its inputs). Each input is
//! kept until its collective is done ([`KeptUntilDone`]), or freeing it would make the
//! compute stream wait for the collective.
//!
//! NCCL blocks forever when a peer dies. A [`Watchdog`] thread therefore follows every
//! collective through a CUDA event: one not complete within the timeout (or an error NCCL
//! reports) aborts the communicator, and the next call fails, after asking the TCP group
//! which rank is gone. The communicator is non-blocking (`communicator.rs`), so that the
//! watchdog's probe and abort never wait for a call in progress. An aborted collective
//! leaves partial output that a read returns all the same, so reads of collectives' outputs
//! are confirmed ([`Collective::confirm_outputs`]) before they are used.

mod communicator;

use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::cudarc::driver::{
    CudaEvent, CudaStream, DevicePtr, DevicePtrMut, DriverError,
};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Shape, Tensor};
use cudarc::nccl::{result, sys};
use half::{bf16, f16};

use crate::collective::{Collective, Membership, Op};
use crate::error::{DistError, Result};
use crate::inflight::KeptUntilDone;
use crate::tcp::TcpRank;
use crate::watchdog::{Completion, Watchdog};
use communicator::Communicator;

/// A CUDA event recorded after a collective: the watchdog's probe, and what tells when the
/// collective's input may go.
struct EventDone(CudaEvent);

impl Completion for EventDone {
    fn done(&self) -> std::result::Result<bool, String> {
        self.0.try_is_complete().map_err(|e| format!("CUDA error {e:?}"))
    }
}

/// One rank of an NCCL group.
pub struct NcclRank {
    control: TcpRank,
    device: CudaDevice,
    /// NCCL's stream; the compute stream is the device's own.
    stream: Arc<CudaStream>,
    comm: Arc<Communicator>,
    watchdog: Arc<Watchdog>,
    watchdog_thread: Option<std::thread::JoinHandle<()>>,
    /// Each collective's input, until the collective is done.
    inputs: KeptUntilDone<Tensor>,
    /// The last collective issued, to name in an error found reading its output.
    last: Mutex<&'static str>,
    /// Counts the bytes NCCL moves; the TCP group counts its own.
    member: Membership,
}

impl NcclRank {
    /// Sets up the NCCL communicator on `device` over a TCP group that has already met
    /// (see [`TcpRank::connect`]): rank 0's unique id travels through it, and its timeout
    /// bounds the setup and every collective.
    pub fn over(control: TcpRank, device: &CudaDevice) -> Result<Self> {
        let (rank, world, timeout) = (control.rank(), control.world(), control.timeout());
        if !device.is_event_tracking() {
            return Err(DistError::Config(
                "the CUDA device has event tracking off; NCCL's stream needs it to order its work".into(),
            ));
        }
        let id = if rank == 0 {
            result::get_uniqueid()
                .map_err(|e| DistError::Config(format!("NCCL unique id: {:?}", e.0)))?
                .internal
        } else {
            [0; 128]
        };
        let bytes: Vec<u8> = id.iter().map(|&c| c as u8).collect();
        let bytes = control.broadcast(bytes, 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        if bytes.len() != internal.len() {
            return Err(DistError::Mismatch(format!("an NCCL unique id of {} bytes", bytes.len())));
        }
        internal.iter_mut().zip(&bytes).for_each(|(c, &b)| *c = b as std::ffi::c_char);
        let context = device.cuda_stream().context().clone();
        let cuda_error = |e: DriverError| DistError::Config(format!("{e:?}"));
        let stream = context.new_stream().map_err(cuda_error)?;
        // NCCL takes the calling thread's current device for the communicator's.
        context.bind_to_thread().map_err(cuda_error)?;
        // Every rank is alive just before NCCL's own rendezvous, which runs in the
        // background and is bounded by the timeout (`Communicator::init`). Should NCCL
        // block in a call all the same, this process ends rather than hang.
        control.barrier()?;
        let limit = timeout * 2;
        let (joined, waiting) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = waiting.recv_timeout(limit) {
                let message = format!(
                    "rank {rank}: the NCCL communicator was not set up within {} s (a rank died or \
                     stalls while joining); exiting",
                    limit.as_secs()
                );
                tracing::error!("{message}");
                eprintln!("error: {message}");
                std::process::exit(1);
            }
        });
        let comm = Communicator::init(world, rank, sys::ncclUniqueId { internal }, timeout);
        let _ = joined.send(());
        let comm = Arc::new(comm?);
        let (probe, abort) = (comm.clone(), comm.clone());
        let (watchdog, watchdog_thread) = Watchdog::start(
            format!("nccl-watchdog-{rank}"),
            timeout,
            Duration::from_millis(100),
            // Event queries need the device's context on the watchdog's thread too.
            move || {
                context.bind_to_thread().map_err(|e| format!("the NCCL watchdog cannot use the GPU: {e:?}"))
            },
            move || probe.async_error(),
            move || abort.abort(),
        )
        .map_err(|e| DistError::Io { what: "starting the NCCL watchdog".into(), source: e })?;
        tracing::info!(
            "rank {rank} of {world}: NCCL communicator on cuda:{}",
            device.cuda_stream().context().ordinal()
        );
        Ok(Self {
            control,
            device: device.clone(),
            stream,
            comm,
            watchdog,
            watchdog_thread: Some(watchdog_thread),
            inputs: KeptUntilDone::default(),
            last: Mutex::new("collective"),
            member: Membership::new(rank, world),
        })
    }

    /// Fails once the collectives cannot be trusted: CUDA recorded an error, NCCL reports
    /// one, or the communicator was aborted (each of which also aborts it, for good); an
    /// abort names the lost rank if the TCP group can tell. `at`: where this looks, to
    /// name in a CUDA error.
    fn healthy(&self, at: &str) -> Result<()> {
        self.cuda_ok(at)?;
        if let Err(why) = self.comm.async_error() {
            self.watchdog.fail(why);
        }
        if !self.watchdog.aborted() && !self.comm.is_aborted() {
            return Ok(());
        }
        let why = self.watchdog.failure().unwrap_or_else(|| "the NCCL communicator was aborted".into());
        let who = match self.control.barrier() {
            Err(e) => e.to_string(),
            Ok(()) => "every rank still answers over TCP".into(),
        };
        Err(DistError::Aborted(format!("{why}; asked over TCP: {who}")))
    }

    /// Fails with the error cudarc recorded in the context where it could not return one
    /// (an event recorded or waited for around a collective, a buffer freed): an ordering
    /// NCCL's stream or the compute stream missed makes the collective's output unreliable,
    /// and unchecked the fault would surface later as an unrelated NCCL error.
    fn cuda_ok(&self, at: &str) -> Result<()> {
        self.stream
            .context()
            .check_err()
            .map_err(|e| self.fault(DistError::Cuda { what: at.to_string(), message: e.to_string() }))
    }

    /// Makes `error` the watchdog's verdict, which aborts the communicator and fails every
    /// later call (`check_err` forgets the error it returns); returns it.
    fn fault(&self, error: DistError) -> DistError {
        self.watchdog.fail(error.to_string());
        error
    }

    /// Orders a collective after the compute stream's work so far, launches it on NCCL's
    /// stream with the communicator, and follows it.
    fn issue(
        &self,
        what: &'static str,
        launch: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> sys::ncclResult_t,
    ) -> Result<()> {
        let name = format!("NCCL {what}");
        self.healthy(&name)?;
        let cuda =
            |e: DriverError| self.fault(DistError::Cuda { what: name.clone(), message: e.to_string() });
        self.stream.context().bind_to_thread().map_err(cuda)?;
        self.inputs.release_done();
        self.stream.join(&self.device.cuda_stream()).map_err(cuda)?;
        let stream = self.stream.cu_stream() as sys::cudaStream_t;
        // Posted when this returns, so the events recorded below follow the collective.
        self.comm
            .call(&name, self.control.timeout(), |comm| launch(comm, stream))
            .map_err(|e| self.fault(e))?;
        let event = self.stream.record_event(None).map_err(cuda)?;
        self.watchdog.follow(&name, Box::new(EventDone(event)));
        if let Ok(mut last) = self.last.lock() {
            *last = what;
        }
        Ok(())
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
        let mut output = unsafe { self.device.alloc::<T>(out_len) }?;
        {
            let (src, _read) = input.device_ptr(&self.stream);
            let (dst, _write) = output.device_ptr_mut(&self.stream);
            self.issue(what, |comm, s| launch(src as *const c_void, dst as *mut c_void, n, comm, s))?;
        }
        // The input's read and the output's write (what the compute stream waits for) are
        // recorded as the two guards above end, and cudarc keeps an error there for later.
        self.cuda_ok(&format!("NCCL {what}"))?;
        Ok(CudaStorage::wrap_cuda_slice(output, self.device.clone()))
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
            candle_core::Device::Cuda(d) if d.same_device(&self.device) => Ok(()),
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
        let done = self.stream.record_event(None).map_err(|e| {
            self.fault(DistError::Cuda { what: format!("NCCL {}", op.name()), message: e.to_string() })
        })?;
        self.inputs.keep(input, Box::new(EventDone(done)));
        Ok(output)
    }
}

impl Collective for NcclRank {
    fn membership(&self) -> &Membership {
        &self.member
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.control.timeout())
    }

    /// Host collectives (small: loss totals, barriers, paths) go over TCP. A contribution
    /// may have been read from a collective's output (the loss total, computed with
    /// gathered weights): the check before refuses it if that collective may have been
    /// aborted halfway, and the one after refuses a reply when a collective failed
    /// meanwhile.
    fn transfer(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        self.healthy("a host collective")?;
        let reply = self.control.exchange(op, contribution)?;
        self.healthy("a host collective")?;
        Ok(reply)
    }

    /// The TCP group counts and times the host collectives itself.
    fn exchange(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        self.transfer(op, contribution)
    }

    fn bytes_moved(&self) -> u64 {
        self.member.bytes_moved() + self.control.bytes_moved()
    }

    fn seconds_in_collectives(&self) -> f64 {
        self.control.seconds_in_collectives()
    }

    /// Host shards (a checkpoint's weights) travel through NCCL too.
    fn all_gather(&self, shard: &[f32], out: &mut [f32]) -> Result<()> {
        let device = candle_core::Device::Cuda(self.device.clone());
        let gathered = self.all_gather_tensor(&Tensor::from_slice(shard, shard.len(), &device)?)?;
        let gathered = gathered.to_vec1::<f32>()?;
        self.confirm_outputs()?;
        out.copy_from_slice(&gathered);
        Ok(())
    }

    fn reduce_scatter(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let device = candle_core::Device::Cuda(self.device.clone());
        let mine = self.reduce_scatter_tensor(&Tensor::from_slice(input, input.len(), &device)?)?;
        let mine = mine.to_vec1::<f32>()?;
        self.confirm_outputs()?;
        out.copy_from_slice(&mine);
        Ok(())
    }

    fn all_gather_tensor(&self, shard: &Tensor) -> Result<Tensor> {
        self.on_device(shard, "all-gather")?;
        let bytes = shard.elem_count() * shard.dtype().size_in_bytes();
        self.member.count(Op::AllGather, bytes);
        self.run(shard.contiguous()?, Kind::AllGather)
    }

    fn reduce_scatter_tensor(&self, blocks: &Tensor) -> Result<Tensor> {
        self.on_device(blocks, "reduce-scatter")?;
        let bytes = blocks.elem_count() * blocks.dtype().size_in_bytes();
        self.member.count(Op::ReduceScatter, bytes);
        self.run(blocks.contiguous()?, Kind::ReduceScatter)
    }

    fn all_reduce_tensor(&self, values: &Tensor) -> Result<Tensor> {
        self.on_device(values, "all-reduce")?;
        let bytes = values.elem_count() * values.dtype().size_in_bytes();
        self.member.count(Op::AllReduce, bytes);
        self.run(values.contiguous()?, Kind::AllReduce)
    }

    /// A read that raced an abort returns partial data: the abort (or NCCL's or CUDA's
    /// error) is found here, before the data is used.
    fn confirm_outputs(&self) -> Result<()> {
        if self.stream.context().bind_to_thread().is_ok() {
            self.inputs.release_done();
        }
        let last = self.last.lock().map_or("collective", |last| *last);
        self.healthy(&format!("the read of NCCL {last}'s output"))
    }
}

impl Drop for NcclRank {
    fn drop(&mut self) {
        // Wait for what was issued while the watchdog still runs, so that a peer that
        // died now cannot hang this wait past the timeout.
        let idle = match self.stream.record_event(None) {
            Ok(event) => loop {
                match event.try_is_complete() {
                    Ok(false) if !self.watchdog.aborted() => std::thread::sleep(Duration::from_millis(10)),
                    Ok(done) => break done,
                    Err(_) => break false,
                }
            },
            Err(_) => false,
        };
        self.watchdog.stop();
        if let Some(watchdog) = self.watchdog_thread.take() {
            let _ = watchdog.join();
        }
        // Destroying a communicator waits for the peers, forever on one in trouble: only
        // one known clean (never aborted, no error from NCCL or CUDA) and idle (nothing in
        // flight) is closed; any other is aborted, which never waits.
        let clean = idle
            && !self.watchdog.aborted()
            && self.comm.is_clean()
            && self.stream.context().check_err().is_ok();
        if clean {
            self.comm.close(self.control.timeout());
        } else {
            self.comm.abort();
        }
        // The inputs still kept are freed with the fields, their collectives over or aborted.
    }
}
