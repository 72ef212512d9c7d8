//! What the world's NCCL communicator and the communicators split from it share: the GPU,
//! NCCL's stream, the watchdog, the TCP group and the inputs kept until their collectives
//! are done.
//!
//! One stream for all: NCCL's kernels of two communicators on two streams could wait for
//! each other across ranks (one rank in a group's all-gather while its peer is in the
//! world's); on one stream they run in the order issued, which is the same on every rank.
//! One watchdog for all: it follows that stream, and a rank lost to one communicator is lost
//! to every one, so it aborts them all ([`Family`]).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use candle_core::cuda_backend::cudarc::driver::{CudaEvent, CudaStream, DriverError};
use candle_core::cuda_backend::CudaDevice;
use candle_core::Tensor;
use cudarc::nccl::{result, sys};

use super::communicator::{Communicator, Family};
use crate::collective::{Collective, Membership};
use crate::error::{DistError, Result};
use crate::inflight::KeptUntilDone;
use crate::tcp::TcpRank;
use crate::watchdog::{Completion, Watchdog};

/// A CUDA event recorded after a collective: the watchdog's probe, and what tells when the
/// collective's input may go.
pub(super) struct EventDone(pub(super) CudaEvent);

impl Completion for EventDone {
    fn done(&self) -> std::result::Result<bool, String> {
        self.0.try_is_complete().map_err(|e| format!("CUDA error {e:?}"))
    }
}

pub(super) struct Engine {
    pub(super) control: TcpRank,
    pub(super) device: CudaDevice,
    /// NCCL's stream; the compute stream is the device's own.
    pub(super) stream: Arc<CudaStream>,
    comms: Arc<Family>,
    watchdog: Arc<Watchdog>,
    watchdog_thread: Option<JoinHandle<()>>,
    /// Each collective's input, until the collective is done.
    pub(super) inputs: KeptUntilDone<Tensor>,
    /// The last collective issued, to name in an error found reading its output.
    last: Mutex<String>,
    /// The bytes NCCL moves, every communicator's, counted as the world's (a group's as
    /// grouped ops); the TCP group counts its own.
    pub(super) counted: Membership,
}

impl Engine {
    /// Sets up the world's communicator on `device` over a TCP group that has already met:
    /// rank 0's unique id travels through it, and its timeout bounds the setup and every
    /// collective. Returns the engine and the world's communicator.
    pub(super) fn start(control: TcpRank, device: &CudaDevice) -> Result<(Arc<Self>, Arc<Communicator>)> {
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
        // background and is bounded by the timeout (`Communicator::init`).
        control.barrier()?;
        let comm = exit_if_stuck(rank, timeout * 2, "setting up the NCCL communicator", || {
            Communicator::init(world, rank, sys::ncclUniqueId { internal }, timeout)
        })?;
        let comm = Arc::new(comm);
        let comms = Arc::new(Family::default());
        comms.add(comm.clone());
        let (probe, abort) = (comms.clone(), comms.clone());
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
        let engine = Self {
            control,
            device: device.clone(),
            stream,
            comms,
            watchdog,
            watchdog_thread: Some(watchdog_thread),
            inputs: KeptUntilDone::default(),
            last: Mutex::new("NCCL collective".into()),
            counted: Membership::new(rank, world),
        };
        Ok((Arc::new(engine), comm))
    }

    /// Splits `parent` (the world's communicator, or a group's that `size` divides) into
    /// communicators of `size` consecutive ranks (color: world rank / size; key: world rank,
    /// so the group's ranks keep the world's order) and follows the new one with the
    /// others. Every rank of `parent` calls it at once.
    pub(super) fn split(&self, parent: &Communicator, size: usize) -> Result<Arc<Communicator>> {
        let (rank, timeout) = (self.control.rank(), self.control.timeout());
        let what = format!("splitting the NCCL communicator into groups of {size}");
        self.healthy(&what)?;
        let cuda =
            |e: DriverError| self.fault(DistError::Cuda { what: what.clone(), message: e.to_string() });
        self.stream.context().bind_to_thread().map_err(cuda)?;
        // NCCL's condition: nothing in flight on the communicator split (the stream is the
        // world's, so this waits for every communicator's work).
        if let Err(why) = self.wait_idle() {
            self.healthy(&what)?;
            return Err(DistError::Aborted(format!("{what}: {why}")));
        }
        // Every rank alive and idle before NCCL's split, which is bounded by the timeout.
        self.control.barrier()?;
        let comm = exit_if_stuck(rank, timeout * 2, &what, || parent.split(rank / size, rank, timeout))?;
        let comm = Arc::new(comm);
        self.comms.add(comm.clone());
        Ok(comm)
    }

    /// Fails once the collectives cannot be trusted: CUDA recorded an error, NCCL reports
    /// one, or a communicator was aborted (each of which also aborts them all, for good); an
    /// abort names the lost rank if the TCP group can tell. `at`: where this looks, to name
    /// in a CUDA error.
    pub(super) fn healthy(&self, at: &str) -> Result<()> {
        self.cuda_ok(at)?;
        if let Err(why) = self.comms.async_error() {
            self.watchdog.fail(why);
        }
        if !self.watchdog.aborted() && !self.comms.is_aborted() {
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
    pub(super) fn cuda_ok(&self, at: &str) -> Result<()> {
        self.stream
            .context()
            .check_err()
            .map_err(|e| self.fault(DistError::Cuda { what: at.to_string(), message: e.to_string() }))
    }

    /// Makes `error` the watchdog's verdict, which aborts the communicators and fails every
    /// later call (`check_err` forgets the error it returns); returns it.
    pub(super) fn fault(&self, error: DistError) -> DistError {
        self.watchdog.fail(error.to_string());
        error
    }

    /// Orders a collective (`name`) after the compute stream's work so far, launches it on
    /// NCCL's stream with `comm`, and follows it.
    pub(super) fn issue(
        &self,
        comm: &Communicator,
        name: &str,
        launch: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> sys::ncclResult_t,
    ) -> Result<()> {
        self.healthy(name)?;
        let cuda = |e: DriverError| self.fault(DistError::Cuda { what: name.into(), message: e.to_string() });
        self.stream.context().bind_to_thread().map_err(cuda)?;
        self.inputs.release_done();
        self.stream.join(&self.device.cuda_stream()).map_err(cuda)?;
        let stream = self.stream.cu_stream() as sys::cudaStream_t;
        // Posted when this returns, so the events recorded below follow the collective.
        comm.call(name, self.control.timeout(), |comm| launch(comm, stream)).map_err(|e| self.fault(e))?;
        let event = self.stream.record_event(None).map_err(cuda)?;
        self.watchdog.follow(name, Box::new(EventDone(event)));
        if let Ok(mut last) = self.last.lock() {
            *last = name.into();
        }
        Ok(())
    }

    /// The last collective issued, for an error found reading its output.
    pub(super) fn last(&self) -> String {
        self.last.lock().map_or_else(|_| "NCCL collective".into(), |last| last.clone())
    }

    /// Waits until everything issued on NCCL's stream is done, while the watchdog runs (so a
    /// peer that died cannot hang it past the timeout); fails once the watchdog aborts or
    /// CUDA reports an error.
    fn wait_idle(&self) -> std::result::Result<(), String> {
        let event = self.stream.record_event(None).map_err(|e| format!("CUDA error {e:?}"))?;
        loop {
            match event.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) if self.watchdog.aborted() => return Err("the collectives were aborted".into()),
                Ok(false) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(format!("CUDA error {e:?}")),
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let idle = self.wait_idle().is_ok();
        self.watchdog.stop();
        if let Some(watchdog) = self.watchdog_thread.take() {
            let _ = watchdog.join();
        }
        // Destroying a communicator waits for the peers, forever on one in trouble: only
        // communicators known clean (never aborted, no error from NCCL or CUDA) and idle
        // (nothing in flight) are closed; any others are aborted, which never waits.
        let clean = idle
            && !self.watchdog.aborted()
            && self.comms.is_clean()
            && self.stream.context().check_err().is_ok();
        if clean {
            self.comms.close(self.control.timeout());
        } else {
            self.comms.abort();
        }
        // The inputs still kept are freed with the fields, their collectives over or aborted.
    }
}

/// Runs `f`, a set-up call into NCCL (`what`) that returns within `limit` on a
/// non-blocking communicator; should NCCL block in it all the same (a rank died or stalls
/// while joining), this process ends rather than hang.
fn exit_if_stuck<T>(rank: usize, limit: Duration, what: &str, f: impl FnOnce() -> T) -> T {
    let (done, waiting) = mpsc::channel::<()>();
    let message = format!(
        "rank {rank}: {what} did not end within {} s (a rank died or stalls while joining); exiting",
        limit.as_secs()
    );
    std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = waiting.recv_timeout(limit) {
            tracing::error!("{message}");
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    });
    let out = f();
    let _ = done.send(());
    out
}
