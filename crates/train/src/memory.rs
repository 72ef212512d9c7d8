//! Heap accounting for benchmarks and memory tests: a global allocator that counts the
//! bytes live now and the most live since the last reset. A binary opts in with
//! `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// The same per thread: ranks run as threads of one process (`bench step --world`), and
// their peaks do not coincide, so the process's peak divided among them understates each
// one's. Signed: a thread may free what another allocated.
thread_local! {
    static THREAD_LIVE: Cell<isize> = const { Cell::new(0) };
    static THREAD_PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting.
pub struct CountingAlloc;

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grow(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        on_thread(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            on_thread(-(layout.size() as isize));
            grow(new_size);
        }
        new
    }
}

fn grow(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
    on_thread(size as isize);
}

/// Counts on this thread's figures (none while the thread is being torn down).
fn on_thread(change: isize) {
    let _ = THREAD_LIVE.try_with(|live| {
        let now = live.get() + change;
        live.set(now);
        let _ = THREAD_PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

/// Bytes this thread allocated and not yet freed, less what it freed of other threads'.
pub fn thread_live_bytes() -> isize {
    THREAD_LIVE.try_with(Cell::get).unwrap_or(0)
}

/// The most of [`thread_live_bytes`] since this thread's last [`reset_thread_peak`].
pub fn thread_peak_bytes() -> isize {
    THREAD_PEAK.try_with(Cell::get).unwrap_or(0)
}

/// Starts a new peak measurement of this thread from what it holds now.
pub fn reset_thread_peak() {
    let _ = THREAD_PEAK.try_with(|peak| peak.set(thread_live_bytes()));
}

/// Bytes allocated and not yet freed (0 unless `CountingAlloc` is the global allocator).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most bytes live at once since the last [`reset_peak`].
pub fn peak_bytes() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak measurement from what is live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}
