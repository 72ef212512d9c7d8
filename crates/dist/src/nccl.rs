//! The NCCL backend: one process per GPU. The ranks first meet over the TCP backend,
//! which carries rank 0's NCCL unique id to the others (the small store at
//! `MASTER_ADDR:MASTER_PORT`) and afterwards the job's small host collectives (loss
//! totals, barriers, a checkpoint's path: a few bytes, with nothing on the GPU to wait
//! for). Tensors (all-gather, reduce-scatter, all-reduce) move through NCCL on a stream of their
//! own, so that FSDP's prefetched all-gather overlaps the compute stream's work; cudarc's
//! event tracking makes a reader of a gathered tensor wait for the gather, and every
//! collective first waits for the compute stream's work so far (its inputs).
//!
//! NCCL blocks forever when a peer dies. A [`Watchdog`] thread therefore follows every
//! collective through a CUDA event: one not complete within the timeout (or an error NCCL
//! reports) aborts the communicator, and the next call fails, after asking the TCP group
//! which rank is gone.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::cudarc::driver::{CudaEvent, CudaStream, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Shape, Tensor};
use cudarc::nccl::{result, sys};
use half::{bf16, f16};

use crate::collective::{Collective, Membership, Op};
use crate::error::{DistError, Result};
use crate::tcp::TcpRank;
use crate::watchdog::{Completion, Watchdog};

/// The raw communicator handle.
struct RawComm(sys::ncclComm_t);

// SAFETY: a handle NCCL lets any thread use, one at a time: `Communicator` holds it
// behind a lock.
unsafe impl Send for RawComm {}

/// The communicator, shared with the watchdog: every use holds the lock, and an abort
/// takes the handle out, so that nothing can use it once it is freed.
struct Communicator(Mutex<Option<RawComm>>);

impl Communicator {
    /// Runs `f` with the handle; fails once the communicator has been aborted.
    fn with<R>(&self, f: impl FnOnce(sys::ncclComm_t) -> Result<R>) -> Result<R> {
        let guard = self
            .0
            .lock()
            .map_err(|_| DistError::Aborted("the NCCL communicator's lock is poisoned".into()))?;
        match guard.as_ref() {
            Some(comm) => f(comm.0),
            None => Err(DistError::Aborted("the NCCL communicator was aborted".into())),
        }
    }

    /// An error NCCL found in the background (a network failure, a peer gone).
    fn async_error(&self) -> std::result::Result<(), String> {
        let found = self.with(|comm| {
            let mut error = sys::ncclResult_t::ncclSuccess;
            // SAFETY: a live communicator (the lock is held) and a local.
            let status = unsafe { sys::ncclCommGetAsyncError(comm, &mut error) };
            Ok([status, error]
                .into_iter()
                .find(|r| !matches!(r, sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress)))
        });
        match found {
            Ok(Some(error)) => Err(format!("NCCL reports {error:?}")),
            _ => Ok(()),
        }
    }

    /// Ends every collective in flight (the documented way out of a hung communicator)
    /// or, with `abort` false, releases an idle one.
    fn release(&self, abort: bool) {
        let taken = match self.0.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(comm) = taken {
            // SAFETY: the handle was live and nothing can reach it any more.
            let _ = unsafe {
                if abort {
                    result::comm_abort(comm.0)
                } else {
                    result::comm_destroy(comm.0)
                }
            };
        }
    }
}

/// A CUDA event recorded after a collective, as the watchdog's probe.
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
    /// Counts the bytes NCCL moves; the TCP group counts its own.
    member: Membership,
}

fn nccl_error(what: &str) -> impl FnOnce(result::NcclError) -> DistError + '_ {
    move |e| DistError::Config(format!("NCCL {what}: {e:?}"))
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
            result::get_uniqueid().map_err(nccl_error("unique id"))?.internal
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
        let cuda_error =
            |e: candle_core::cuda_backend::cudarc::driver::DriverError| DistError::Config(format!("{e:?}"));
        let stream = context.new_stream().map_err(cuda_error)?;
        // NCCL takes the calling thread's current device for the communicator's.
        context.bind_to_thread().map_err(cuda_error)?;
        // NCCL's own rendezvous cannot time out: every rank is alive just before it, and
        // one that dies within it ends this process after the timeout rather than hang.
        control.barrier()?;
        let (joined, waiting) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = waiting.recv_timeout(timeout) {
                let message = format!(
                    "rank {rank}: the NCCL communicator was not set up within {} s (a rank died or \
                     stalls while joining); exiting",
                    timeout.as_secs()
                );
                tracing::error!("{message}");
                eprintln!("error: {message}");
                std::process::exit(1);
            }
        });
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: `comm` receives the communicator; the id came from rank 0.
        let comm = unsafe {
            result::comm_init_rank(
                comm.as_mut_ptr(),
                world as i32,
                sys::ncclUniqueId { internal },
                rank as i32,
            )
            .map_err(nccl_error("init"))?;
            comm.assume_init()
        };
        let _ = joined.send(());
        let comm = Arc::new(Communicator(Mutex::new(Some(RawComm(comm)))));
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
            move || abort.release(true),
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
            member: Membership::new(rank, world),
        })
    }

    /// Fails when the watchdog aborted the communicator, naming the lost rank if the
    /// TCP group can tell.
    fn healthy(&self) -> Result<()> {
        if !self.watchdog.aborted() {
            return Ok(());
        }
        let why = self.watchdog.failure().unwrap_or_default();
        let who = match self.control.barrier() {
            Err(e) => e.to_string(),
            Ok(()) => "every rank still answers over TCP".into(),
        };
        Err(DistError::Aborted(format!("{why}; asked over TCP: {who}")))
    }

    /// Orders a collective after the compute stream's work so far, launches it on NCCL's
    /// stream with the communicator, and follows it.
    fn issue(
        &self,
        what: &str,
        launch: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> std::result::Result<(), result::NcclError>,
    ) -> Result<()> {
        self.healthy()?;
        let wrap = |e: candle_core::cuda_backend::cudarc::driver::DriverError| {
            DistError::Config(format!("{what}: {e:?}"))
        };
        self.stream.context().bind_to_thread().map_err(wrap)?;
        self.stream.join(&self.device.cuda_stream()).map_err(wrap)?;
        let stream = self.stream.cu_stream() as sys::cudaStream_t;
        self.comm.with(|comm| launch(comm, stream).map_err(nccl_error(what)))?;
        let event = self.stream.record_event(None).map_err(wrap)?;
        self.watchdog.follow(&format!("NCCL {what}"), Box::new(EventDone(event)));
        Ok(())
    }

    /// Runs one collective from a tensor's `n` elements into a new buffer of `out_len`;
    /// `launch` gets the two device pointers and `n`.
    fn collective_into<T: NcclElement>(
        &self,
        what: &str,
        storage: &CudaStorage,
        layout: &Layout,
        out_len: usize,
        launch: impl FnOnce(
            *const c_void,
            *mut c_void,
            usize,
            sys::ncclComm_t,
            sys::cudaStream_t,
        ) -> std::result::Result<result::NcclStatus, result::NcclError>,
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
            self.issue(what, |comm, s| {
                launch(src as *const c_void, dst as *mut c_void, n, comm, s).map(|_| ())
            })?;
        }
        Ok(CudaStorage::wrap_cuda_slice(output, self.device.clone()))
    }

    fn gather_slice<T: NcclElement>(&self, storage: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        let out_len = layout.shape().elem_count() * self.world();
        // SAFETY (here and below): the buffers hold the counts NCCL is given, on this
        // rank's device.
        self.collective_into::<T>("all-gather", storage, layout, out_len, |src, dst, n, comm, s| unsafe {
            result::all_gather(src, dst, n, T::NCCL, comm, s)
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
                result::reduce_scatter(src, dst, out_len, f32::NCCL, sys::ncclRedOp_t::ncclSum, comm, s)
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
            result::all_reduce(src, dst, n, T::NCCL, sys::ncclRedOp_t::ncclSum, comm, s)
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
enum TensorCollective<'a> {
    AllGather(&'a NcclRank),
    ReduceScatter(&'a NcclRank),
    AllReduce(&'a NcclRank),
}

impl CustomOp1 for TensorCollective<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::AllGather(_) => "nccl-all-gather",
            Self::ReduceScatter(_) => "nccl-reduce-scatter",
            Self::AllReduce(_) => "nccl-all-reduce",
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: NCCL moves GPU tensors only", self.name())
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = layout.shape().elem_count();
        let wrap = |e: DistError| candle_core::Error::Msg(e.to_string());
        match self {
            Self::AllGather(rank) => {
                let out = match storage.dtype() {
                    DType::F32 => rank.gather_slice::<f32>(storage, layout),
                    DType::BF16 => rank.gather_slice::<bf16>(storage, layout),
                    DType::F16 => rank.gather_slice::<f16>(storage, layout),
                    other => candle_core::bail!("nccl-all-gather of {other:?}"),
                };
                Ok((out.map_err(wrap)?, Shape::from(n * rank.world())))
            }
            Self::ReduceScatter(rank) => {
                if storage.dtype() != DType::F32 || !n.is_multiple_of(rank.world()) {
                    candle_core::bail!(
                        "nccl-reduce-scatter of {n} {:?} over {} ranks",
                        storage.dtype(),
                        rank.world()
                    )
                }
                Ok((rank.reduce_scatter_slice(storage, layout).map_err(wrap)?, Shape::from(n / rank.world())))
            }
            Self::AllReduce(rank) => {
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

impl Collective for NcclRank {
    fn membership(&self) -> &Membership {
        &self.member
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.control.timeout())
    }

    /// Host collectives (small: loss totals, barriers, paths) go over TCP.
    fn transfer(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        self.healthy()?;
        self.control.exchange(op, contribution)
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
        out.copy_from_slice(&gathered.to_vec1::<f32>()?);
        Ok(())
    }

    fn reduce_scatter(&self, input: &[f32], out: &mut [f32]) -> Result<()> {
        let device = candle_core::Device::Cuda(self.device.clone());
        let mine = self.reduce_scatter_tensor(&Tensor::from_slice(input, input.len(), &device)?)?;
        out.copy_from_slice(&mine.to_vec1::<f32>()?);
        Ok(())
    }

    fn all_gather_tensor(&self, shard: &Tensor) -> Result<Tensor> {
        self.on_device(shard, "all-gather")?;
        let bytes = shard.elem_count() * shard.dtype().size_in_bytes();
        self.member.count(Op::AllGather, bytes);
        Ok(shard.contiguous()?.apply_op1_no_bwd(&TensorCollective::AllGather(self))?)
    }

    fn reduce_scatter_tensor(&self, blocks: &Tensor) -> Result<Tensor> {
        self.on_device(blocks, "reduce-scatter")?;
        let bytes = blocks.elem_count() * blocks.dtype().size_in_bytes();
        self.member.count(Op::ReduceScatter, bytes);
        Ok(blocks.contiguous()?.apply_op1_no_bwd(&TensorCollective::ReduceScatter(self))?)
    }

    fn all_reduce_tensor(&self, values: &Tensor) -> Result<Tensor> {
        self.on_device(values, "all-reduce")?;
        let bytes = values.elem_count() * values.dtype().size_in_bytes();
        self.member.count(Op::AllReduce, bytes);
        Ok(values.contiguous()?.apply_op1_no_bwd(&TensorCollective::AllReduce(self))?)
    }
}

impl Drop for NcclRank {
    fn drop(&mut self) {
        // Wait for what was issued while the watchdog still runs, so that a peer that
        // died now cannot hang this wait past the timeout.
        if let Ok(event) = self.stream.record_event(None) {
            while !self.watchdog.aborted() && matches!(event.try_is_complete(), Ok(false)) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.watchdog.stop();
        if let Some(watchdog) = self.watchdog_thread.take() {
            let _ = watchdog.join();
        }
        self.comm.release(false);
    }
}
