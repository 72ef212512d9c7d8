//! The launch of `kernels/cross_entropy.cu`: a block per row.

use candle_core::Result;

use crate::launch::{Arg, Buffer, Executor, Launch};

/// Threads per row; the block merges their running (max, sum) pairs.
const THREADS: u32 = 256;
/// The merge's shared scratch: a (max, sum) pair per warp.
const SCRATCH: usize = 64 * 4;

/// The buffers: f32 logits `[rows, vocab]`, u32 targets, the optional gradient
/// `[rows, vocab]` and the losses `[rows]`.
pub(crate) struct Buffers {
    pub logits: Buffer,
    pub targets: Buffer,
    pub d_logits: Option<Buffer>,
    pub loss: Buffer,
}

pub(crate) fn rows(exec: &mut impl Executor, b: Buffers, rows: usize, vocab: usize) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let all = rows * vocab * 4;
    let launch = Launch::new("cross_entropy", "cross_entropy_rows", rows as u32, THREADS)
        .shared(SCRATCH)
        .buffer("logits", b.logits, all, 4)
        .buffer("targets", b.targets, rows * 4, 4)
        .maybe_buffer("d_logits", b.d_logits, all, 4)
        .buffer("loss", b.loss, rows * 4, 4)
        .arg(Arg::I32(vocab as i32));
    exec.run(&launch)
}
