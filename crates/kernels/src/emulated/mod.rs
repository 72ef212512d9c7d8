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
            residual: *const c_void,
            w: *const c_void,
            sum: *mut c_void,
            y: *mut c_void,
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
            dy: *const c_void,
            d_add: *const c_void,
            dx: *mut c_void,
            dw: *mut c_void,
            rows: i32,
            cols: i32,
            eps: f32,
            threads: i32,
            chunks: i32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn emu_rope(
            bf16: i32,
            backward: i32,
            x: *const c_void,
            cos: *const f32,
            sin: *const f32,
            y: *mut c_void,
            tokens: usize,
            heads: i32,
            head_dim: i32,
            blocks: i32,
            threads: i32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn emu_adamw_step(
            master: *mut f32,
            m: *mut f32,
            v: *mut f32,
            grad: *const f32,
            compute: *mut c_void,
            chunks: *const crate::adamw::Chunk,
            chunk_count: i32,
            scalars: *const crate::adamw::Scalars,
            threads: i32,
        );
        pub fn emu_cross_entropy_rows(
            logits: *const f32,
            targets: *const u32,
            d_logits: *mut f32,
            loss: *mut f32,
            rows: i32,
            vocab: i32,
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

/// RMSNorm forward over `rows` rows of `cols`. With `residual` = `(r, sum)`, the fused
/// form: the rows are `x + r` (rounded), written to `sum`, then normalised.
pub fn rms_norm_fwd<T: Element>(
    x: &[T],
    residual: Option<(&[T], &mut [T])>,
    w: &[T],
    y: &mut [T],
    cols: usize,
    eps: f32,
    threads: usize,
) {
    let rows = x.len() / cols.max(1);
    check("x", x.len(), rows * cols);
    check("w", w.len(), cols);
    check("y", y.len(), rows * cols);
    let (residual, sum) = match residual {
        Some((r, sum)) => {
            check("residual", r.len(), rows * cols);
            check("sum", sum.len(), rows * cols);
            (r.as_ptr().cast(), sum.as_mut_ptr().cast())
        }
        None => (std::ptr::null(), std::ptr::null_mut()),
    };
    threads_ok(threads);
    // SAFETY: the sizes were checked against the shape the kernel reads and writes.
    unsafe {
        ffi::emu_rms_norm_fwd(
            T::BF16 as i32,
            x.as_ptr().cast(),
            residual,
            w.as_ptr().cast(),
            sum,
            y.as_mut_ptr().cast(),
            rows as i32,
            cols as i32,
            eps,
            threads as i32,
        )
    }
}

/// RMSNorm backward: `dx` and `dw` (summed over rows in `chunks` row chunks, then over
/// the chunks), both in the input's dtype. `d_add`, the gradient that reaches the fused
/// form's sum directly, is added to `dx`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_bwd<T: Element>(
    x: &[T],
    w: &[T],
    dy: &[T],
    d_add: Option<&[T]>,
    dx: &mut [T],
    dw: &mut [T],
    cols: usize,
    eps: f32,
    threads: usize,
    chunks: usize,
) {
    let rows = x.len() / cols.max(1);
    check("x", x.len(), rows * cols);
    check("w", w.len(), cols);
    check("dy", dy.len(), rows * cols);
    check("dx", dx.len(), rows * cols);
    check("dw", dw.len(), cols);
    if let Some(d_add) = d_add {
        check("d_add", d_add.len(), rows * cols);
    }
    threads_ok(threads);
    assert!((1..=rows.max(1)).contains(&chunks), "{chunks} row chunks for {rows} rows");
    // SAFETY: the sizes were checked against the shape the kernels read and write.
    unsafe {
        ffi::emu_rms_norm_bwd(
            T::BF16 as i32,
            x.as_ptr().cast(),
            w.as_ptr().cast(),
            dy.as_ptr().cast(),
            d_add.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
            dx.as_mut_ptr().cast(),
            dw.as_mut_ptr().cast(),
            rows as i32,
            cols as i32,
            eps,
            threads as i32,
            chunks as i32,
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

/// RoPE of `x` (`[tokens, heads, head_dim]`) from f32 `cos`/`sin` tables
/// (`[tokens, head_dim]`); `backward` applies the transposed rotation (to a gradient).
#[allow(clippy::too_many_arguments)]
pub fn rope<T: Element>(
    backward: bool,
    x: &[T],
    cos: &[f32],
    sin: &[f32],
    y: &mut [T],
    heads: usize,
    head_dim: usize,
    blocks: usize,
    threads: usize,
) {
    assert!(head_dim.is_multiple_of(2) && head_dim > 0, "head_dim {head_dim} must be even");
    let tokens = cos.len() / head_dim;
    check("cos", cos.len(), tokens * head_dim);
    check("sin", sin.len(), tokens * head_dim);
    check("x", x.len(), tokens * heads * head_dim);
    check("y", y.len(), x.len());
    threads_ok(threads);
    assert!(blocks > 0, "at least one block");
    // SAFETY: the sizes were checked against the shape the kernel reads and writes.
    unsafe {
        ffi::emu_rope(
            T::BF16 as i32,
            backward as i32,
            x.as_ptr().cast(),
            cos.as_ptr(),
            sin.as_ptr(),
            y.as_mut_ptr().cast(),
            tokens,
            heads as i32,
            head_dim as i32,
            blocks as i32,
            threads as i32,
        )
    }
}

/// The state AdamW updates: master weights and moments, with the optional bf16 copy.
pub struct AdamwState<'a> {
    pub master: &'a mut [f32],
    pub m: &'a mut [f32],
    pub v: &'a mut [f32],
    pub compute: Option<&'a mut [Bf16]>,
}

/// One multi-tensor AdamW step: a block per chunk of `threads` threads.
pub fn adamw_step(
    state: AdamwState<'_>,
    grad: &[f32],
    chunks: &[crate::adamw::Chunk],
    scalars: &crate::adamw::Scalars,
    threads: usize,
) {
    let n = state.master.len();
    check("m", state.m.len(), n);
    check("v", state.v.len(), n);
    check("grad", grad.len(), n);
    if let Some(compute) = &state.compute {
        check("compute", compute.len(), n);
    }
    for chunk in chunks {
        assert!(chunk.offset + chunk.len as u64 <= n as u64, "chunk {chunk:?} outside {n} elements");
    }
    threads_ok(threads);
    let compute = state.compute.map_or(std::ptr::null_mut(), |c| c.as_mut_ptr().cast());
    if chunks.is_empty() {
        return;
    }
    // SAFETY: every buffer has n elements and every chunk ends inside them.
    unsafe {
        ffi::emu_adamw_step(
            state.master.as_mut_ptr(),
            state.m.as_mut_ptr(),
            state.v.as_mut_ptr(),
            grad.as_ptr(),
            compute,
            chunks.as_ptr(),
            chunks.len() as i32,
            scalars,
            threads as i32,
        )
    }
}

/// Per-row cross-entropy of f32 `logits` (`[rows, vocab]`) against `targets`, with the
/// gradient `softmax - one_hot` into `d_logits` when given.
pub fn cross_entropy_rows(
    logits: &[f32],
    targets: &[u32],
    d_logits: Option<&mut [f32]>,
    loss: &mut [f32],
    vocab: usize,
    threads: usize,
) {
    let rows = targets.len();
    check("logits", logits.len(), rows * vocab);
    check("loss", loss.len(), rows);
    assert!(targets.iter().all(|&t| (t as usize) < vocab), "a target outside the vocabulary");
    if let Some(d) = &d_logits {
        check("d_logits", d.len(), rows * vocab);
    }
    threads_ok(threads);
    if rows == 0 {
        return;
    }
    let d_logits = d_logits.map_or(std::ptr::null_mut(), |d| d.as_mut_ptr());
    // SAFETY: the sizes and targets were checked against the shape the kernel reads and writes.
    unsafe {
        ffi::emu_cross_entropy_rows(
            logits.as_ptr(),
            targets.as_ptr(),
            d_logits,
            loss.as_mut_ptr(),
            rows as i32,
            vocab as i32,
            threads as i32,
        )
    }
}

mod warp_matrix;
pub use warp_matrix::{gemm_16x8, ldmatrix_dump, mma_fragments, LdmatrixDump};

mod flash_attention;
pub use flash_attention::{flash_attention_bwd, flash_attention_fwd, AttentionGrads, AttentionShape};
