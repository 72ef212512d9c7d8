//! NCCL's communicator, created non-blocking (`blocking = 0`): no call on it waits for the
//! peers, so that the issuing thread never sits in NCCL while the watchdog needs the
//! handle, and the watchdog probes and aborts it from its own thread without a lock (see
//! [`SharedHandle`]). A call may answer `ncclInProgress` (NCCL still posting it, e.g. while
//! it connects to the peers); it then counts as made only once `ncclCommGetAsyncError`
//! stops saying so.

use std::ffi::c_int;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cudarc::nccl::sys;

use crate::error::{DistError, Result};
use crate::inflight::{settle, Progress, Settled, SharedHandle};

/// How long an abort waits for a call in progress on another thread to return before it
/// aborts under it (see [`SharedHandle::take`]); a non-blocking call takes microseconds.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// `NCCL_CONFIG_UNDEF_INT`: the attribute is NCCL's default.
const UNDEF: c_int = c_int::MIN;
/// `NCCL_API_MAGIC`, which tells NCCL the config was made as `NCCL_CONFIG_INITIALIZER` makes it.
const MAGIC: u32 = 0xcafe_beef;
/// `NCCL_VERSION(2, 30, 0)`: the header whose `ncclConfig_t` cudarc declares (its `nccl`
/// feature is NCCL 2.30). An older library reads `size` bytes of the struct and no more.
const CONFIG_VERSION: u32 = 2 * 10_000 + 30 * 100;

/// `NCCL_CONFIG_INITIALIZER` (every attribute NCCL's default) with `blocking = 0`.
fn non_blocking_config() -> sys::ncclConfig_t {
    sys::ncclConfig_t {
        size: std::mem::size_of::<sys::ncclConfig_t>(),
        magic: MAGIC,
        version: CONFIG_VERSION,
        blocking: 0,
        cgaClusterSize: UNDEF,
        minCTAs: UNDEF,
        maxCTAs: UNDEF,
        netName: std::ptr::null(),
        splitShare: UNDEF,
        trafficClass: UNDEF,
        commName: std::ptr::null(),
        collnetEnable: UNDEF,
        CTAPolicy: UNDEF,
        shrinkShare: UNDEF,
        nvlsCTAs: UNDEF,
        nChannelsPerNetPeer: UNDEF,
        nvlinkCentricSched: UNDEF,
        graphUsageMode: UNDEF,
        numRmaCtx: UNDEF,
        maxP2pPeers: UNDEF,
    }
}

/// The communicator's handle, shared by the issuing thread and the watchdog.
pub(super) struct Communicator(SharedHandle<sys::ncclComm>);

impl Communicator {
    /// Joins the group as `rank` of `world` (the calling thread's current device is the
    /// communicator's) and waits up to `timeout` for the set-up, which NCCL runs in the
    /// background; one not done by then (a rank died or stalls while joining) is aborted.
    pub(super) fn init(world: usize, rank: usize, id: sys::ncclUniqueId, timeout: Duration) -> Result<Self> {
        // NCCL lets this variable override the config; a blocking communicator would put
        // the watchdog back behind the calls it watches.
        if std::env::var("NCCL_COMM_BLOCKING").is_ok_and(|v| v.trim() == "1") {
            return Err(DistError::Config(
                "NCCL_COMM_BLOCKING=1: the NCCL backend needs a non-blocking communicator (its \
                 watchdog aborts a hung one from another thread); unset it"
                    .into(),
            ));
        }
        let mut config = non_blocking_config();
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` receives the handle; `config` is a complete `ncclConfig_t` as
        // NCCL_CONFIG_INITIALIZER makes it; the id came from rank 0.
        let status =
            unsafe { sys::ncclCommInitRankConfig(&mut comm, world as c_int, id, rank as c_int, &mut config) };
        Self::adopt(comm, status, timeout, "NCCL init", None)
    }

    /// Splits this communicator (`ncclCommSplit`): the ranks that pass the same `color` make
    /// one new communicator, ranked by `key`, non-blocking like this one. Every rank of this
    /// one must call it at once, with nothing in flight on it (NCCL's condition); the wait is
    /// [`Communicator::init`]'s.
    pub(super) fn split(&self, color: usize, key: usize, timeout: Duration) -> Result<Self> {
        let what = "NCCL split";
        let number = |n: usize| {
            c_int::try_from(n).map_err(|_| DistError::Config(format!("{what}: {n} is out of NCCL's range")))
        };
        let (color, key) = (number(color)?, number(key)?);
        let mut config = non_blocking_config();
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        let status = {
            let lease = self.0.lease().ok_or_else(|| aborted(what))?;
            // SAFETY: a live parent (the lease holds off its release); `comm` receives the
            // new handle; `config` is complete, as in `init`.
            unsafe { sys::ncclCommSplit(lease.get(), color, key, &mut comm, &mut config) }
        };
        Self::adopt(comm, status, timeout, what, Some(self))
    }

    /// Takes the handle a creation call (`what`) made and waits up to `timeout` for NCCL to
    /// set it up in the background, and for a split, for the parent's part in it too (NCCL
    /// runs the split as the parent's work). One that fails or is not done by then (a rank
    /// died or stalls while joining) is aborted.
    fn adopt(
        comm: sys::ncclComm_t,
        status: sys::ncclResult_t,
        timeout: Duration,
        what: &str,
        parent: Option<&Communicator>,
    ) -> Result<Self> {
        if comm.is_null() {
            return Err(DistError::Config(format!("{what}: {status:?}")));
        }
        let made = Self(SharedHandle::new(comm));
        let settled = match status {
            sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress => {
                settle(timeout, || match (made.look()?, parent) {
                    (Progress::Done, Some(parent)) => parent.look(),
                    (mine, _) => Some(mine),
                })
            }
            error => Settled::Failed(format!("{error:?}")),
        };
        match settled {
            Settled::Done => Ok(made),
            other => {
                made.abort();
                Err(match other {
                    Settled::TimedOut => DistError::Aborted(format!(
                        "{what}: the NCCL communicator was not set up within {} s (a rank died or \
                         stalls while joining)",
                        timeout.as_secs()
                    )),
                    _ => DistError::Config(format!("{what}: {other:?}")),
                })
            }
        }
    }

    /// The communicator's state, without waiting: `None` once it is aborted.
    pub(super) fn look(&self) -> Option<Progress> {
        let lease = self.0.lease()?;
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: a live handle (the lease holds off its release) and a local.
        let status = unsafe { sys::ncclCommGetAsyncError(lease.get(), &mut state) };
        Some(match (status, state) {
            (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclSuccess) => Progress::Done,
            (sys::ncclResult_t::ncclSuccess, sys::ncclResult_t::ncclInProgress) => Progress::Pending,
            (sys::ncclResult_t::ncclSuccess, error) => Progress::Failed(format!("NCCL reports {error:?}")),
            (error, _) => Progress::Failed(format!("ncclCommGetAsyncError: {error:?}")),
        })
    }

    /// An error NCCL found in the background (a network failure, a peer gone); never
    /// waits, so the watchdog can ask while a collective is being posted.
    pub(super) fn async_error(&self) -> std::result::Result<(), String> {
        match self.look() {
            Some(Progress::Failed(why)) => Err(why),
            _ => Ok(()),
        }
    }

    /// Whether the communicator is known clean: not aborted, nothing in progress, no error.
    pub(super) fn is_clean(&self) -> bool {
        self.look() == Some(Progress::Done)
    }

    pub(super) fn is_aborted(&self) -> bool {
        self.0.is_taken()
    }

    /// Makes one call on the communicator (`what`: a collective's launch, for the errors)
    /// and waits, up to `timeout`, until NCCL has posted it: only then is the collective on
    /// the stream, so that events recorded there afterwards follow it. An error leaves the
    /// communicator unusable; the caller aborts it.
    pub(super) fn call(
        &self,
        what: &str,
        timeout: Duration,
        f: impl FnOnce(sys::ncclComm_t) -> sys::ncclResult_t,
    ) -> Result<()> {
        let status = {
            let lease = self.0.lease().ok_or_else(|| aborted(what))?;
            f(lease.get())
        };
        let settled = match status {
            sys::ncclResult_t::ncclSuccess => Settled::Done,
            sys::ncclResult_t::ncclInProgress => settle(timeout, || self.look()),
            error => Settled::Failed(format!("{error:?}")),
        };
        match settled {
            Settled::Done => Ok(()),
            Settled::Gone => Err(aborted(what)),
            Settled::Failed(why) => Err(DistError::Aborted(format!("{what} failed: {why}"))),
            Settled::TimedOut => {
                Err(DistError::Aborted(format!("{what} was not posted within {} s", timeout.as_secs_f64())))
            }
        }
    }

    /// Ends every collective in flight and frees the communicator: the way out of a hung
    /// or failed one, which never waits for the peers. Only the first caller (of this or
    /// [`Communicator::close`]) frees it.
    pub(super) fn abort(&self) {
        if let Some(comm) = self.0.take(ABORT_GRACE) {
            // SAFETY: the handle was live, and nothing can reach it any more.
            let status = unsafe { sys::ncclCommAbort(comm) };
            if !matches!(status, sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress) {
                tracing::warn!("ncclCommAbort: {status:?}");
            }
        }
    }

    /// Frees a clean, idle communicator: `ncclCommFinalize` (which flushes and waits, in
    /// the background, until every rank is done with it), then `ncclCommDestroy`, which
    /// after it frees local resources only. A finalize that fails or is not over within
    /// `timeout` (a peer gone meanwhile) aborts instead.
    pub(super) fn close(&self, timeout: Duration) {
        let status = match self.0.lease() {
            // SAFETY: a live handle; the lease ends before the handle is taken below.
            Some(lease) => unsafe { sys::ncclCommFinalize(lease.get()) },
            None => return,
        };
        let finalized = match status {
            sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress => {
                settle(timeout, || self.look())
            }
            error => Settled::Failed(format!("{error:?}")),
        };
        if finalized != Settled::Done {
            tracing::warn!("ncclCommFinalize: {finalized:?}; aborting the communicator instead");
            return self.abort();
        }
        if let Some(comm) = self.0.take(ABORT_GRACE) {
            // SAFETY: a finalized handle that nothing can reach any more.
            let status = unsafe { sys::ncclCommDestroy(comm) };
            if status != sys::ncclResult_t::ncclSuccess {
                tracing::warn!("ncclCommDestroy: {status:?}");
            }
        }
    }
}

/// One nobody closed (a set-up that failed midway) is aborted.
impl Drop for Communicator {
    fn drop(&mut self) {
        self.abort();
    }
}

fn aborted(what: &str) -> DistError {
    DistError::Aborted(format!("the NCCL communicator was aborted before {what} was posted"))
}

/// The world's communicator and those split from it: one watchdog follows them all and
/// aborts them all (a job that lost a rank has lost it for every group), and they end
/// together.
#[derive(Default)]
pub(super) struct Family(Mutex<Vec<Arc<Communicator>>>);

impl Family {
    fn members(&self) -> MutexGuard<'_, Vec<Arc<Communicator>>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn add(&self, comm: Arc<Communicator>) {
        self.members().push(comm);
    }

    /// The first error NCCL found in the background on any of them; never waits.
    pub(super) fn async_error(&self) -> std::result::Result<(), String> {
        self.members().iter().try_for_each(|comm| comm.async_error())
    }

    pub(super) fn is_aborted(&self) -> bool {
        self.members().iter().any(|comm| comm.is_aborted())
    }

    pub(super) fn is_clean(&self) -> bool {
        self.members().iter().all(|comm| comm.is_clean())
    }

    /// Aborts them all, without holding the list meanwhile: an abort may wait out its grace
    /// for a call in progress, and the issuing thread's health checks read the list.
    pub(super) fn abort(&self) {
        let members = self.members().clone();
        members.iter().for_each(|comm| comm.abort());
    }

    /// Closes them all, those split last first and the world's last: the same order on
    /// every rank, since each close waits for the peers' (see [`Communicator::close`]).
    pub(super) fn close(&self, timeout: Duration) {
        let members = self.members().clone();
        members.iter().rev().for_each(|comm| comm.close(timeout));
    }
}
