//! The NCCL backend: one process per GPU. The ranks first meet over the TCP backend,
//! which carries rank 0's NCCL unique id to the others (the small store at
//! `MASTER_ADDR:MASTER_PORT`) and afterwards the job's small host collectives (loss
//! totals, barriers, checkpoint paths). Tensors move through NCCL on a stream of their
//! own, so that FSDP's prefetched all-gather overlaps the compute stream's work; cudarc's
//! event tracking makes a reader of a gathered tensor wait for the gather, and every
//! collective first waits for the compute stream's work so far (its inputs).
//!
//! NCCL blocks forever when a peer dies. A watchdog thread therefore follows every
//! collective through an event: one not complete within the timeout aborts the
//! communicator, and the next call fails, after asking the TCP group which rank is gone.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::cudarc::driver::{CudaEvent, CudaStream, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Layout, Shape, Tensor};
use cudarc::nccl::{result, sys};
use half::{bf16, f16};

use crate::collective::{logical_bytes, Collective, Op};
use crate::error::{DistError, Result};
use crate::tcp::TcpRank;

/// The raw communicator, shared with the watchdog so that it can abort it.
struct Communicator(sys::ncclComm_t);

// SAFETY: NCCL communicators may be used from any thread; davinci issues collectives from
// one thread and the watchdog only calls `ncclCommAbort` and `ncclCommGetAsyncError`,
// which NCCL documents as safe to call concurrently for exactly this purpose.
unsafe impl Send for Communicator {}
unsafe impl Sync for Communicator {}

/// What the watchdog follows, and what it found.
struct Health {
    comm: Communicator,
    /// Collectives issued and not yet seen complete, oldest first.
    pending: Mutex<VecDeque<(Instant, String, CudaEvent)>>,
    /// Set once the communicator is aborted: why.
    failure: Mutex<Option<String>>,
    aborted: AtomicBool,
    stop: AtomicBool,
}

impl Health {
    fn abort(&self, why: String) {
        if !self.aborted.swap(true, Ordering::SeqCst) {
            tracing::error!("{why}; aborting the NCCL communicator");
            if let Ok(mut failure) = self.failure.lock() {
                *failure = Some(why);
            }
            // SAFETY: the communicator is valid until `NcclRank` drops, which first stops
            // this thread; abort is the documented way to end a hung communicator.
            let _ = unsafe { result::comm_abort(self.comm.0) };
        }
    }

    /// One look: completed collectives leave the queue; the oldest pending one that is
    /// older than `timeout`, or an error NCCL reports, aborts.
    fn check(&self, timeout: Duration) {
        let mut async_error = sys::ncclResult_t::ncclSuccess;
        // SAFETY: a valid communicator and a pointer to a local.
        let status = unsafe { sys::ncclCommGetAsyncError(self.comm.0, &mut async_error) };
        let reported = [status, async_error]
            .into_iter()
            .find(|r| !matches!(r, sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress));
        if let Some(error) = reported {
            return self.abort(format!("NCCL reports {error:?}"));
        }
        let Ok(mut pending) = self.pending.lock() else { return };
        while let Some((started, what, event)) = pending.front() {
            match event.try_is_complete() {
                Ok(true) => {
                    pending.pop_front();
                }
                Ok(false) if started.elapsed() > timeout => {
                    let why = format!("NCCL {what} did not complete within {} s", timeout.as_secs());
                    drop(pending);
                    return self.abort(why);
                }
                Ok(false) => return,
                Err(e) => {
                    let why = format!("CUDA error while NCCL {what} ran: {e:?}");
                    drop(pending);
                    return self.abort(why);
                }
            }
        }
    }
}

/// One rank of an NCCL group.
pub struct NcclRank {
    control: TcpRank,
    device: CudaDevice,
    /// NCCL's stream; the compute stream is the device's own.
    stream: Arc<CudaStream>,
    health: Arc<Health>,
    watchdog: Option<std::thread::JoinHandle<()>>,
    moved: AtomicU64,
}

fn nccl_error(what: &str) -> impl FnOnce(result::NcclError) -> DistError + '_ {
    move |e| DistError::Config(format!("NCCL {what}: {e:?}"))
}

impl NcclRank {
    /// Joins the group: the TCP rendezvous at `addr` (see [`TcpRank::connect`]), then
    /// the NCCL communicator on `device`. `timeout` bounds the rendezvous and every
    /// collective.
    pub fn connect(
        addr: &str,
        rank: usize,
        world: usize,
        fingerprint: &str,
        timeout: Duration,
        device: &CudaDevice,
    ) -> Result<Self> {
        let control = TcpRank::connect(addr, rank, world, fingerprint, timeout)?;
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
        let stream =
            device.cuda_stream().context().new_stream().map_err(|e| DistError::Config(format!("{e:?}")))?;
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
        let health = Arc::new(Health {
            comm: Communicator(comm),
            pending: Mutex::new(VecDeque::new()),
            failure: Mutex::new(None),
            aborted: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let watched = health.clone();
        let watchdog = std::thread::Builder::new()
            .name(format!("nccl-watchdog-{rank}"))
            .spawn(move || {
                while !watched.stop.load(Ordering::Relaxed) && !watched.aborted.load(Ordering::Relaxed) {
                    watched.check(timeout);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
            .map_err(|e| DistError::Io { what: "starting the NCCL watchdog".into(), source: e })?;
        tracing::info!(
            "rank {rank} of {world}: NCCL communicator on cuda:{}",
            device.cuda_stream().context().ordinal()
        );
        Ok(Self {
            control,
            device: device.clone(),
            stream,
            health,
            watchdog: Some(watchdog),
            moved: AtomicU64::new(0),
        })
    }

    /// Fails when the watchdog aborted the communicator, naming the lost rank if the
    /// TCP group can tell.
    fn healthy(&self) -> Result<()> {
        if !self.health.aborted.load(Ordering::SeqCst) {
            return Ok(());
        }
        let why = self.health.failure.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        let who = match self.control.barrier() {
            Err(e) => e.to_string(),
            Ok(()) => "every rank still answers over TCP".into(),
        };
        Err(DistError::Rank { rank: self.control.rank(), message: format!("{why} ({who})") })
    }

    /// Orders a collective after the compute stream's work so far, and follows it.
    fn issue(
        &self,
        what: &str,
        launch: impl FnOnce(sys::cudaStream_t) -> std::result::Result<(), result::NcclError>,
    ) -> Result<()> {
        self.healthy()?;
        let wrap = |e: candle_core::cuda_backend::cudarc::driver::DriverError| {
            DistError::Config(format!("{what}: {e:?}"))
        };
        self.stream.join(&self.device.cuda_stream()).map_err(wrap)?;
        launch(self.stream.cu_stream() as sys::cudaStream_t).map_err(nccl_error(what))?;
        let event = self.stream.record_event(None).map_err(wrap)?;
        if let Ok(mut pending) = self.health.pending.lock() {
            pending.push_back((Instant::now(), what.to_string(), event));
        }
        Ok(())
    }

    fn gather_slice<T: NcclElement>(&self, storage: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        let n = layout.shape().elem_count();
        let start = layout.start_offset();
        let input = storage.as_cuda_slice::<T>()?.slice(start..start + n);
        // SAFETY: every element is written by the all-gather before anything reads it.
        let mut output = unsafe { self.stream.alloc::<T>(n * self.world()) }
            .map_err(|e| DistError::Config(format!("{e:?}")))?;
        {
            let (src, _read) = input.device_ptr(&self.stream);
            let (dst, _write) = output.device_ptr_mut(&self.stream);
            let comm = self.health.comm.0;
            // SAFETY: `src` holds n elements and `dst` world * n, both on this device.
            self.issue("all-gather", |s| unsafe {
                result::all_gather(src as *const c_void, dst as *mut c_void, n, T::NCCL, comm, s).map(|_| ())
            })?;
        }
        Ok(CudaStorage::wrap_cuda_slice(output, self.device.clone()))
    }

    fn reduce_scatter_slice(&self, storage: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        let total = layout.shape().elem_count();
        let n = total / self.world();
        let start = layout.start_offset();
        let input = storage.as_cuda_slice::<f32>()?.slice(start..start + total);
        // SAFETY: the reduce-scatter writes every element.
        let mut output =
            unsafe { self.stream.alloc::<f32>(n) }.map_err(|e| DistError::Config(format!("{e:?}")))?;
        {
            let (src, _read) = input.device_ptr(&self.stream);
            let (dst, _write) = output.device_ptr_mut(&self.stream);
            let comm = self.health.comm.0;
            // SAFETY: `src` holds world * n elements and `dst` n, both on this device.
            self.issue("reduce-scatter", |s| unsafe {
                result::reduce_scatter(
                    src as *const c_void,
                    dst as *mut c_void,
                    n,
                    sys::ncclDataType_t::ncclFloat32,
                    sys::ncclRedOp_t::ncclSum,
                    comm,
                    s,
                )
                .map(|_| ())
            })?;
        }
        Ok(CudaStorage::wrap_cuda_slice(output, self.device.clone()))
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
}

impl CustomOp1 for TensorCollective<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::AllGather(_) => "nccl-all-gather",
            Self::ReduceScatter(_) => "nccl-reduce-scatter",
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
        }
    }
}

impl Collective for NcclRank {
    fn rank(&self) -> usize {
        self.control.rank()
    }

    fn world(&self) -> usize {
        self.control.world()
    }

    /// Host collectives (small: loss totals, barriers, paths) go over TCP.
    fn exchange(&self, op: Op, contribution: Vec<u8>) -> Result<Vec<u8>> {
        self.healthy()?;
        self.control.exchange(op, contribution)
    }

    fn bytes_moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed) + self.control.bytes_moved()
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
        self.moved.fetch_add(logical_bytes(Op::AllGather, bytes, self.world()), Ordering::Relaxed);
        Ok(shard.contiguous()?.apply_op1_no_bwd(&TensorCollective::AllGather(self))?)
    }

    fn reduce_scatter_tensor(&self, blocks: &Tensor) -> Result<Tensor> {
        self.on_device(blocks, "reduce-scatter")?;
        let bytes = blocks.elem_count() * blocks.dtype().size_in_bytes();
        self.moved.fetch_add(logical_bytes(Op::ReduceScatter, bytes, self.world()), Ordering::Relaxed);
        Ok(blocks.contiguous()?.apply_op1_no_bwd(&TensorCollective::ReduceScatter(self))?)
    }
}

impl Drop for NcclRank {
    fn drop(&mut self) {
        self.health.stop.store(true, Ordering::Relaxed);
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.join();
        }
        if !self.health.aborted.load(Ordering::SeqCst) {
            // Finish what was issued, then release the communicator.
            let _ = self.stream.synchronize();
            // SAFETY: no collective is in flight any more, and the watchdog has stopped.
            let _ = unsafe { result::comm_destroy(self.health.comm.0) };
        }
    }
}
