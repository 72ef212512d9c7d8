//! A watchdog for collectives that run asynchronously and can hang forever (NCCL's, when a
//! peer dies): it follows each one through a completion probe (a CUDA event on a GPU) and,
//! when the oldest is still not done after the timeout (counted from when the one before
//! it finished) or a probe reports an error, calls the abort once and keeps the reason,
//! which the next collective then reports.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tells whether a collective issued earlier has completed.
pub trait Completion: Send {
    /// `Ok(true)` once done, `Ok(false)` while running, `Err` when it failed.
    fn done(&self) -> Result<bool, String>;
}

/// A collective being followed: when it was issued, what it is, and its probe.
type Followed = (Instant, String, Box<dyn Completion>);

/// What the watchdog thread and the issuing thread share.
pub struct Watchdog {
    pending: Mutex<VecDeque<Followed>>,
    failure: Mutex<Option<String>>,
    aborted: AtomicBool,
    stop: AtomicBool,
    timeout: Duration,
    /// Ends the hung collectives (NCCL: `ncclCommAbort`); called at most once.
    abort: Box<dyn Fn() + Send + Sync>,
    /// An extra look each round (NCCL: its asynchronous error), `Err` to abort.
    health: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

impl Watchdog {
    /// Starts the thread that looks every `every`.
    pub fn start(
        name: String,
        timeout: Duration,
        every: Duration,
        on_start: impl FnOnce() -> Result<(), String> + Send + 'static,
        health: impl Fn() -> Result<(), String> + Send + Sync + 'static,
        abort: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<(Arc<Self>, JoinHandle<()>)> {
        let watchdog = Arc::new(Self {
            pending: Mutex::new(VecDeque::new()),
            failure: Mutex::new(None),
            aborted: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            timeout,
            abort: Box::new(abort),
            health: Box::new(health),
        });
        let watched = watchdog.clone();
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            if let Err(why) = on_start() {
                watched.fail(why);
            }
            while !watched.stop.load(Ordering::Relaxed) && !watched.aborted() {
                watched.check();
                std::thread::sleep(every);
            }
        })?;
        Ok((watchdog, handle))
    }

    /// Follows a collective just issued.
    pub fn follow(&self, what: &str, completion: Box<dyn Completion>) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.push_back((Instant::now(), what.to_string(), completion));
        }
    }

    pub fn aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Why the watchdog aborted, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Asks the thread to end (it does within one round).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Aborts for `why` (the first reason wins and is kept): the watchdog's own verdict, or
    /// a fault the issuing thread found (NCCL's error, CUDA's), so that every later call
    /// fails too and the communicator is aborted, not destroyed.
    pub fn fail(&self, why: String) {
        // The reason before the flag, so that whoever sees the abort also finds why.
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert_with(|| why.clone());
        }
        if !self.aborted.swap(true, Ordering::SeqCst) {
            tracing::error!("{why}; aborting the collectives");
            (self.abort)();
        }
    }

    /// One look: completed collectives leave the queue; the oldest one still running
    /// after the timeout, or any error, aborts.
    fn check(&self) {
        if let Err(why) = (self.health)() {
            return self.fail(why);
        }
        let Ok(mut pending) = self.pending.lock() else { return };
        while let Some((started, what, completion)) = pending.front() {
            let why = match completion.done() {
                Ok(true) => {
                    // The next one's clock starts now: it may have waited in the queue
                    // behind this one (and behind the compute it depends on).
                    pending.pop_front();
                    if let Some(next) = pending.front_mut() {
                        next.0 = Instant::now();
                    }
                    continue;
                }
                Ok(false) if started.elapsed() > self.timeout => {
                    format!("{what} did not complete within {} s", self.timeout.as_secs_f64())
                }
                Ok(false) => return,
                Err(e) => format!("{what} failed: {e}"),
            };
            drop(pending);
            return self.fail(why);
        }
    }
}

/// Completions for tests, where no GPU gives events: a flag another thread sets, and one
/// that reports a fault.
pub mod fakes {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::Completion;

    /// Done once the flag is set.
    pub struct Flag(pub Arc<AtomicBool>);

    impl Completion for Flag {
        fn done(&self) -> Result<bool, String> {
            Ok(self.0.load(Ordering::SeqCst))
        }
    }

    /// A collective whose stream faulted.
    pub struct Broken;

    impl Completion for Broken {
        fn done(&self) -> Result<bool, String> {
            Err("an illegal address".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use fakes::{Broken, Flag};

    fn watchdog(timeout_ms: u64) -> (Arc<Watchdog>, JoinHandle<()>, Arc<AtomicUsize>) {
        let aborts = Arc::new(AtomicUsize::new(0));
        let counted = aborts.clone();
        let (w, h) = Watchdog::start(
            "test-watchdog".into(),
            Duration::from_millis(timeout_ms),
            Duration::from_millis(10),
            || Ok(()),
            || Ok(()),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
        (w, h, aborts)
    }

    #[test]
    fn a_collective_that_completes_in_time_is_let_go() {
        let (w, h, aborts) = watchdog(300);
        let done = Arc::new(AtomicBool::new(false));
        w.follow("all-gather", Box::new(Flag(done.clone())));
        std::thread::sleep(Duration::from_millis(100));
        done.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400));
        assert!(!w.aborted() && w.failure().is_none());
        w.stop();
        h.join().unwrap();
        assert_eq!(aborts.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_hung_collective_aborts_once_within_the_timeout_and_says_which() {
        let (w, h, aborts) = watchdog(200);
        let started = Instant::now();
        w.follow("reduce-scatter", Box::new(Flag(Arc::new(AtomicBool::new(false)))));
        h.join().unwrap(); // the thread ends once it has aborted
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(aborts.load(Ordering::SeqCst), 1);
        let why = w.failure().unwrap();
        assert!(why.contains("reduce-scatter did not complete within 0.2 s"), "{why}");
    }

    #[test]
    fn a_fault_found_by_the_issuing_thread_aborts_once_and_keeps_the_first_reason() {
        let (w, h, aborts) = watchdog(60_000);
        w.fail("CUDA error at NCCL all-gather".into());
        w.fail("NCCL reports ncclRemoteError".into());
        h.join().unwrap(); // the thread ends once the collectives are aborted
        assert!(w.aborted());
        assert_eq!(aborts.load(Ordering::SeqCst), 1);
        assert_eq!(w.failure().as_deref(), Some("CUDA error at NCCL all-gather"));
    }

    #[test]
    fn an_error_aborts_at_once() {
        let (w, h, aborts) = watchdog(60_000);
        w.follow("all-gather", Box::new(Broken));
        h.join().unwrap();
        assert_eq!(aborts.load(Ordering::SeqCst), 1);
        assert!(w.failure().unwrap().contains("all-gather failed: an illegal address"));
    }
}
