//! The NCCL backend's bookkeeping of work in flight, on the CPU: the communicator's handle
//! (a probe never waits for a call in progress, an abort refuses new uses at once and
//! frees the handle after the calls in progress, only one party frees it), the bounded
//! wait for an operation being posted, and collectives' inputs kept until they are done.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, TryRecvError};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use davinci_dist::inflight::{settle, KeptUntilDone, Progress, Settled, SharedHandle};
use davinci_dist::watchdog::fakes::{Broken, Flag};

/// A grace no test reaches: an abort waits for the calls in progress.
const LONG: Duration = Duration::from_secs(60);

/// A handle to a heap value, freed by whoever takes it.
fn handle() -> Arc<SharedHandle<u64>> {
    Arc::new(SharedHandle::new(Box::into_raw(Box::new(42))))
}

fn free(ptr: *mut u64) {
    // SAFETY: made by `handle` and taken once.
    drop(unsafe { Box::from_raw(ptr) });
}

/// A thread in the middle of a call with the handle (a collective being issued), until
/// the returned sender says to return.
fn call_in_progress(
    handle: &Arc<SharedHandle<u64>>,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (entered, inside) = channel();
    let (finish, finishing) = channel::<()>();
    let handle = handle.clone();
    let thread = std::thread::spawn(move || {
        let lease = handle.lease().expect("a live handle");
        entered.send(()).unwrap();
        let _ = finishing.recv();
        // SAFETY: the lease keeps the value alive.
        assert_eq!(unsafe { *lease.get() }, 42, "the handle stays valid during the call");
    });
    inside.recv().unwrap();
    (finish, thread)
}

#[test]
fn a_probe_never_waits_for_a_collective_in_progress() {
    let handle = handle();
    let (finish, caller) = call_in_progress(&handle);
    let (probed, probe) = channel();
    let prober = handle.clone();
    std::thread::spawn(move || {
        let found = prober.lease().map(|lease| unsafe { *lease.get() });
        probed.send(found).unwrap();
    });
    let found = probe.recv_timeout(Duration::from_secs(2));
    assert_eq!(found, Ok(Some(42)), "the probe answers while the call is still in progress");
    finish.send(()).unwrap();
    caller.join().unwrap();
    free(handle.take(LONG).unwrap());
}

#[test]
fn an_abort_refuses_new_uses_at_once_and_frees_only_after_the_calls_in_progress() {
    let handle = handle();
    let (finish, caller) = call_in_progress(&handle);
    let (taken, take) = channel();
    let taker = handle.clone();
    // The address crosses threads as a number (a raw pointer is not `Send`).
    std::thread::spawn(move || taken.send(taker.take(LONG).map(|ptr| ptr as usize)).unwrap());
    let started = Instant::now();
    while !handle.is_taken() {
        assert!(started.elapsed() < Duration::from_secs(2), "the abort never started");
        std::thread::yield_now();
    }
    assert!(handle.lease().is_none(), "no new use once an abort has begun");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(take.try_recv().err(), Some(TryRecvError::Empty), "freed under a call in progress");
    finish.send(()).unwrap();
    caller.join().unwrap();
    let ptr = take.recv_timeout(Duration::from_secs(2)).unwrap().expect("the aborting party gets the handle");
    free(ptr as *mut u64);
    assert!(handle.take(LONG).is_none() && handle.lease().is_none());
}

#[test]
fn only_one_party_aborts_the_communicator() {
    let handle = handle();
    let racers = 8;
    let start = Arc::new(Barrier::new(racers));
    let winners = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..racers)
        .map(|_| {
            let (handle, start, winners) = (handle.clone(), start.clone(), winners.clone());
            std::thread::spawn(move || {
                start.wait();
                if let Some(ptr) = handle.take(LONG) {
                    winners.fetch_add(1, Ordering::SeqCst);
                    free(ptr);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(winners.load(Ordering::SeqCst), 1);
    assert!(handle.is_taken() && handle.take(LONG).is_none());
}

#[test]
fn an_operation_still_being_posted_at_the_deadline_times_out() {
    let started = Instant::now();
    let looks = AtomicUsize::new(0);
    let settled = settle(Duration::from_millis(200), || {
        looks.fetch_add(1, Ordering::SeqCst);
        Some(Progress::Pending)
    });
    let waited = started.elapsed();
    assert_eq!(settled, Settled::TimedOut);
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(2), "{waited:?}");
    assert!(looks.load(Ordering::SeqCst) > 2, "it keeps looking until the deadline");
}

#[test]
fn an_operation_posted_or_failed_ends_the_wait() {
    let mut looks = 0;
    let posted = settle(Duration::from_secs(60), || {
        looks += 1;
        Some(if looks < 3 { Progress::Pending } else { Progress::Done })
    });
    assert_eq!((posted, looks), (Settled::Done, 3));
    let failed = settle(Duration::from_secs(60), || Some(Progress::Failed("ncclRemoteError".into())));
    assert_eq!(failed, Settled::Failed("ncclRemoteError".into()));
}

/// The issuing thread waits for an operation being posted while the watchdog aborts: the
/// abort is not held up by the wait (it holds no lease between looks), and the wait ends.
#[test]
fn an_abort_ends_the_wait_for_an_operation_being_posted_without_waiting_for_it() {
    let handle = handle();
    let waiter = handle.clone();
    let wait = std::thread::spawn(move || {
        settle(Duration::from_secs(60), || waiter.lease().map(|_| Progress::Pending))
    });
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    free(handle.take(LONG).expect("the abort gets the handle"));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(wait.join().unwrap(), Settled::Gone);
}

#[test]
fn a_collectives_input_is_kept_until_the_collective_is_done() {
    let kept = KeptUntilDone::default();
    let (first, second) = (Arc::new(1), Arc::new(2));
    let (first_done, second_done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    kept.keep(first.clone(), Box::new(Flag(first_done.clone())));
    kept.keep(second.clone(), Box::new(Flag(second_done.clone())));
    kept.keep(Arc::new(3), Box::new(Broken));
    assert_eq!(kept.release_done(), 3);
    assert_eq!((Arc::strong_count(&first), Arc::strong_count(&second)), (2, 2), "both still held");

    second_done.store(true, Ordering::SeqCst);
    assert_eq!(kept.release_done(), 2);
    assert_eq!((Arc::strong_count(&first), Arc::strong_count(&second)), (2, 1), "the done one is freed");

    first_done.store(true, Ordering::SeqCst);
    assert_eq!(kept.release_done(), 1, "one whose probe fails stays");
    assert_eq!(Arc::strong_count(&first), 1);
    drop(kept);
}

#[test]
fn a_call_stuck_past_the_grace_does_not_hold_up_the_abort() {
    let handle = handle();
    let (finish, caller) = call_in_progress(&handle);
    let started = Instant::now();
    let ptr = handle.take(Duration::from_millis(100)).expect("the aborting party gets the handle");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(100) && waited < Duration::from_secs(2), "{waited:?}");
    finish.send(()).unwrap();
    caller.join().unwrap();
    free(ptr);
}
