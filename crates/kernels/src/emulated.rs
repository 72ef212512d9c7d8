//! Safe entry points to the emulated kernels. Each checks the buffers' sizes, then runs the
//! kernel's grid on host threads (one launch at a time).

/// bfloat16 bits, as the device stores them.
pub type Bf16 = u16;

mod ffi {
    use std::ffi::c_void;
    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn emu_rms_norm_fwd(
            bf16: i32,
            x: *const c_void,
            w: *const c_void,
            y: *mut c_void,
            rstd: *mut f32,
            rows: i32,
            cols: i32,
            eps: f32,
            threads: i32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn emu_rms_norm_bwd(
            bf16: i32,
            x: *const c_void,
            w: *const c_void,
            rstd: *const f32,
            dy: *const c_void,
            dx: *mut c_void,
            dw: *mut f32,
            rows: i32,
            cols: i32,
            threads: i32,
        );
        pub fn emu_swiglu_fwd(
            bf16: i32,
            gate: *const c_void,
            up: *const c_void,
            y: *mut c_void,
            n: usize,
            blocks: i32,
            threads: i32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn emu_swiglu_bwd(
            bf16: i32,
            gate: *const c_void,
            up: *const c_void,
            dy: *const c_void,
            d_gate: *mut c_void,
            d_up: *mut c_void,
            n: usize,
            blocks: i32,
            threads: i32,
        );
    }
}

/// Element types the kernels take: f32, or bf16 bits.
pub trait Element: Copy {
    const BF16: bool;
}
impl Element for f32 {
    const BF16: bool = false;
}
impl Element for Bf16 {
    const BF16: bool = true;
}

fn check(what: &str, len: usize, expected: usize) {
    assert_eq!(len, expected, "{what}: {len} elements where the shape needs {expected}");
}

fn threads_ok(threads: usize) {
    assert!(
        (32..=1024).contains(&threads) && threads.is_multiple_of(32),
        "{threads} threads: a multiple of 32, 32..=1024"
    );
}

/// RMSNorm forward over `rows` rows of `cols`: `y` and the per-row `rstd`.
pub fn rms_norm_fwd<T: Element>(
    x: &[T],
    w: &[T],
    y: &mut [T],
    rstd: &mut [f32],
    cols: usize,
    eps: f32,
    threads: usize,
) {
    let rows = x.len() / cols.max(1);
    check("x", x.len(), rows * cols);
    check("w", w.len(), cols);
    check("y", y.len(), rows * cols);
    check("rstd", rstd.len(), rows);
    threads_ok(threads);
    // SAFETY: the sizes were checked against the shape the kernel reads and writes.
    unsafe {
        ffi::emu_rms_norm_fwd(
            T::BF16 as i32,
            x.as_ptr().cast(),
            w.as_ptr().cast(),
            y.as_mut_ptr().cast(),
            rstd.as_mut_ptr(),
            rows as i32,
            cols as i32,
            eps,
            threads as i32,
        )
    }
}

/// RMSNorm backward: `dx` (the input's dtype) and `dw` (f32, summed over rows).
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_bwd<T: Element>(
    x: &[T],
    w: &[T],
    rstd: &[f32],
    dy: &[T],
    dx: &mut [T],
    dw: &mut [f32],
    cols: usize,
    threads: usize,
) {
    let rows = x.len() / cols.max(1);
    check("x", x.len(), rows * cols);
    check("w", w.len(), cols);
    check("rstd", rstd.len(), rows);
    check("dy", dy.len(), rows * cols);
    check("dx", dx.len(), rows * cols);
    check("dw", dw.len(), cols);
    threads_ok(threads);
    // SAFETY: the sizes were checked against the shape the kernels read and write.
    unsafe {
        ffi::emu_rms_norm_bwd(
            T::BF16 as i32,
            x.as_ptr().cast(),
            w.as_ptr().cast(),
            rstd.as_ptr(),
            dy.as_ptr().cast(),
            dx.as_mut_ptr().cast(),
            dw.as_mut_ptr(),
            rows as i32,
            cols as i32,
            threads as i32,
        )
    }
}

/// SwiGLU forward, `y = silu(gate) * up`, on a grid of `blocks` x `threads`.
pub fn swiglu_fwd<T: Element>(gate: &[T], up: &[T], y: &mut [T], blocks: usize, threads: usize) {
    check("up", up.len(), gate.len());
    check("y", y.len(), gate.len());
    threads_ok(threads);
    assert!(blocks > 0, "at least one block");
    // SAFETY: the sizes were checked; the kernel touches elements below `gate.len()` only.
    unsafe {
        ffi::emu_swiglu_fwd(
            T::BF16 as i32,
            gate.as_ptr().cast(),
            up.as_ptr().cast(),
            y.as_mut_ptr().cast(),
            gate.len(),
            blocks as i32,
            threads as i32,
        )
    }
}

/// SwiGLU backward: the gradients of `gate` and `up`.
pub fn swiglu_bwd<T: Element>(
    gate: &[T],
    up: &[T],
    dy: &[T],
    d_gate: &mut [T],
    d_up: &mut [T],
    blocks: usize,
    threads: usize,
) {
    for (what, len) in [("up", up.len()), ("dy", dy.len()), ("d_gate", d_gate.len()), ("d_up", d_up.len())] {
        check(what, len, gate.len());
    }
    threads_ok(threads);
    assert!(blocks > 0, "at least one block");
    // SAFETY: the sizes were checked; the kernel touches elements below `gate.len()` only.
    unsafe {
        ffi::emu_swiglu_bwd(
            T::BF16 as i32,
            gate.as_ptr().cast(),
            up.as_ptr().cast(),
            dy.as_ptr().cast(),
            d_gate.as_mut_ptr().cast(),
            d_up.as_mut_ptr().cast(),
            gate.len(),
            blocks as i32,
            threads as i32,
        )
    }
}
