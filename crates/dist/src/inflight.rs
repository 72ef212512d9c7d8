//! What the NCCL backend keeps about work in flight, in code that needs no GPU (so that
//! the CPU tests cover it):
//!
//! - [`SharedHandle`]: the communicator's handle, which the issuing thread uses for its
//!   calls while the watchdog probes it and may abort it. A lock held across the calls
//!   would make the watchdog's probe and abort wait for the very collective they watch;
//!   here a probe never waits, an abort refuses new uses at once and frees the handle once
//!   the calls already made have returned (a non-blocking communicator's calls return at
//!   once) or a grace period has passed, and only one party ever frees it.
//! - [`settle`]: the wait for an operation a non-blocking communicator is still posting,
//!   bounded and ended by an abort.
//! - [`KeptUntilDone`]: the inputs of collectives that run on another stream, kept until
//!   those are done (see its doc for why).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::watchdog::Completion;

/// A raw handle shared between threads, taken once. The pointee's thread safety is the
/// caller's to know (NCCL allows probing and aborting a non-blocking communicator from
/// another thread).
pub struct SharedHandle<T> {
    ptr: AtomicPtr<T>,
    /// Leases out: calls in progress with the handle.
    users: AtomicUsize,
}

impl<T> SharedHandle<T> {
    pub fn new(ptr: *mut T) -> Self {
        Self { ptr: AtomicPtr::new(ptr), users: AtomicUsize::new(0) }
    }

    /// The handle for one call, or `None` once it is taken. Never waits.
    pub fn lease(&self) -> Option<Lease<'_, T>> {
        // Counted before the handle is read: a taker that swapped it out after this read
        // sees the count and waits for the lease to end.
        self.users.fetch_add(1, Ordering::SeqCst);
        let ptr = self.ptr.load(Ordering::SeqCst);
        let lease = Lease { handle: self, ptr };
        (!ptr.is_null()).then_some(lease)
    }

    /// Whether the handle has been taken (aborted or released).
    pub fn is_taken(&self) -> bool {
        self.ptr.load(Ordering::SeqCst).is_null()
    }

    /// Takes the handle to free it: the first caller gets it, once the leases out when it
    /// was taken have ended or `grace` has passed; new leases are refused from the moment
    /// it is taken, and every later caller gets `None`. A call still in progress after the
    /// grace is stuck (NCCL blocked launching behind a hung collective): that is what an
    /// abort must end, and NCCL's abort may come from another thread. A lease the calling
    /// thread holds would only make it wait out the grace.
    pub fn take(&self, grace: Duration) -> Option<*mut T> {
        let ptr = self.ptr.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if ptr.is_null() {
            return None;
        }
        let deadline = Instant::now() + grace;
        while self.users.load(Ordering::SeqCst) != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
        Some(ptr)
    }
}

/// One use of a [`SharedHandle`]: the handle stays valid while it lives (unless an
/// abort's grace runs out under it).
pub struct Lease<'a, T> {
    handle: &'a SharedHandle<T>,
    ptr: *mut T,
}

impl<T> Lease<'_, T> {
    pub fn get(&self) -> *mut T {
        self.ptr
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        self.handle.users.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one look at an operation being posted finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Done,
    Pending,
    Failed(String),
}

/// How the wait for an operation being posted ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Done,
    Failed(String),
    /// The handle was taken (aborted) meanwhile.
    Gone,
    TimedOut,
}

/// Looks at an operation in progress (`look`: `None` once the handle is taken) until it is
/// done or failed, the handle is gone, or `timeout` passes, pausing between looks (from
/// 10 µs, doubling to 1 ms). Nothing is held between looks, so an abort is never kept
/// waiting by this wait.
pub fn settle(timeout: Duration, mut look: impl FnMut() -> Option<Progress>) -> Settled {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(10);
    loop {
        match look() {
            None => return Settled::Gone,
            Some(Progress::Done) => return Settled::Done,
            Some(Progress::Failed(why)) => return Settled::Failed(why),
            Some(Progress::Pending) if Instant::now() >= deadline => return Settled::TimedOut,
            Some(Progress::Pending) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(1));
    }
}

/// The inputs of collectives that run on a stream of their own, each kept until its
/// collective is done. cudarc records a collective's read of its input as an event on
/// the input's buffer, and dropping a buffer makes the stream that frees it (the compute
/// stream) wait for that event: an input dropped as soon as its collective is issued
/// (FSDP's shard of the weights, the gradients' blocks: temporaries) would hold the
/// compute stream up until the collective ends, so nothing would overlap. Dropped once the
/// collective is done, the wait costs nothing.
pub struct KeptUntilDone<T> {
    kept: Mutex<VecDeque<(T, Box<dyn Completion>)>>,
}

impl<T> Default for KeptUntilDone<T> {
    fn default() -> Self {
        Self { kept: Mutex::new(VecDeque::new()) }
    }
}

impl<T> KeptUntilDone<T> {
    /// Keeps `input` until `done` says its collective is.
    pub fn keep(&self, input: T, done: Box<dyn Completion>) {
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.push_back((input, done));
    }

    /// Drops the inputs whose collective is done; one whose probe fails (a CUDA error) is
    /// kept, to go with the rest when the backend does. Returns how many are still kept.
    pub fn release_done(&self) -> usize {
        let mut kept = self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.retain(|(_, done)| !matches!(done.done(), Ok(true)));
        kept.len()
    }

    pub fn len(&self) -> usize {
        self.kept.lock().map_or(0, |kept| kept.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
