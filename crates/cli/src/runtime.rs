//! Process-wide settings for computing on the CPU, applied first thing in `main`, before
//! any thread starts or any tensor is allocated. Each one leaves a setting the user made
//! in the environment alone.

/// Applies the settings below.
pub fn tune_for_cpu() {
    keep_freed_memory();
    quiet_candle_pool();
}

/// glibc hands every allocation above its threshold (128 KiB, rising as such blocks are
/// freed) to its own `mmap` and returns it to the system on free, and trims the heap's top
/// when 128 KiB are free there: a training step, which allocates and frees the same large
/// activations again and again, then spends a quarter of its time in the kernel zeroing
/// fresh pages. Blocks up to glibc's ceiling (32 MiB) are kept on the heap instead, and
/// freed memory is kept for the next allocation. The heap the process holds between steps
/// grows by what a step frees; what is live (`bench step`'s figures) does not change.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() && std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: mallopt only changes the allocator's parameters; it is called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

/// candle runs its element-wise ops on a pool of its own whose idle workers spin for a
/// while after each op, and its matrix products on rayon's pool: on a machine with few
/// cores the spinning workers take the cores the matrix products need. With one thread
/// candle runs its element-wise ops on the calling thread (the heavy ones of this model
/// are davinci's own ops, which use rayon).
fn quiet_candle_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Sound: no other thread exists yet to read the environment concurrently.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
