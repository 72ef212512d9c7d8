//! The launches of `kernels/cross_entropy.cu`: the losses (a block per row), then the
//! gradient (a row split over blocks along y).

use candle_core::Result;

use crate::launch::{Arg, Buffer, Element, Executor, Launch};

const SOURCE: &str = "cross_entropy";
/// Threads per block of both kernels.
const THREADS: u32 = 256;
/// 16-byte loads each thread has in flight (`UNROLL` in the kernel).
const UNROLL: usize = 4;
/// The merge's shared scratch: a (max, sum) pair per warp.
const SCRATCH: usize = 64 * 4;

/// The losses' buffers: logits `[rows, vocab]`, u32 targets, and f32 `[rows]` each for
/// the losses and the rows' log-sum-exp.
pub(crate) struct Rows {
    pub logits: Buffer,
    pub targets: Buffer,
    pub loss: Buffer,
    pub lse: Buffer,
}

/// The gradient's buffers: the logits, targets and log-sum-exp the losses' launch read and
/// wrote, and the gradient `[rows, vocab]` in the logits' dtype.
pub(crate) struct Grad {
    pub logits: Buffer,
    pub targets: Buffer,
    pub lse: Buffer,
    pub d_logits: Buffer,
}

/// Each row's loss and log-sum-exp.
pub(crate) fn rows(
    exec: &mut impl Executor,
    element: Element,
    b: Rows,
    rows: usize,
    vocab: usize,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let size = element.size();
    let launch =
        Launch::new(SOURCE, format!("cross_entropy_rows_{}", element.suffix()), rows as u32, THREADS)
            .shared(SCRATCH)
            // Element-aligned is enough: each row's loads start at its first 16-byte boundary.
            .buffer("logits", b.logits, rows * vocab * size, size)
            .buffer("targets", b.targets, rows * 4, 4)
            .buffer("loss", b.loss, rows * 4, 4)
            .buffer("lse", b.lse, rows * 4, 4)
            .arg(Arg::I32(vocab as i32));
    exec.run(&launch)
}

/// `softmax - one_hot(target)` from the rows' log-sum-exp: per row, as many blocks as it
/// takes to give each thread `UNROLL` packs of 16 bytes.
pub(crate) fn grad(
    exec: &mut impl Executor,
    element: Element,
    b: Grad,
    rows: usize,
    vocab: usize,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let size = element.size();
    let per_block = THREADS as usize * UNROLL * (16 / size);
    let all = rows * vocab * size;
    let launch =
        Launch::new(SOURCE, format!("cross_entropy_grad_{}", element.suffix()), rows as u32, THREADS)
            .grid_y(vocab.div_ceil(per_block).max(1) as u32)
            .buffer("logits", b.logits, all, size)
            .buffer("targets", b.targets, rows * 4, 4)
            .buffer("lse", b.lse, rows * 4, 4)
            .buffer("d_logits", b.d_logits, all, size)
            .arg(Arg::I32(vocab as i32));
    exec.run(&launch)
}
