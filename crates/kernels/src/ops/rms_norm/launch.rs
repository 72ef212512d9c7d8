//! The launches of `kernels/rms_norm.cu`, for the device and the emulation alike.

use candle_core::Result;

use crate::launch::{Arg, Buffer, Element, Executor, Launch};

const SOURCE: &str = "rms_norm";

/// Threads per row block: one element each, up to 512 (the loops stride over longer
/// rows; 512 keeps the block far from the register file's limit).
pub(crate) fn row_threads(cols: usize) -> u32 {
    (cols.div_ceil(32) * 32).clamp(32, 512) as u32
}

/// `block_sum`'s shared scratch: a float per warp.
const ROW_SCRATCH: usize = 32 * 4;
/// Row chunks for the weight gradient's partial sums.
const CHUNKS: usize = 64;
/// Threads per block of the column kernels (a thread per column).
const COLUMN_THREADS: u32 = 256;

/// The forward's buffers; `residual` is `(residual, sum)` for the fused form.
pub(crate) struct Forward {
    pub x: Buffer,
    pub residual: Option<(Buffer, Buffer)>,
    pub w: Buffer,
    pub y: Buffer,
}

/// A block per row.
pub(crate) fn forward(
    exec: &mut impl Executor,
    element: Element,
    b: Forward,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let (size, all) = (element.size(), rows * cols * element.size());
    let launch =
        Launch::new(SOURCE, format!("rms_norm_fwd_{}", element.suffix()), rows as u32, row_threads(cols))
            .shared(ROW_SCRATCH)
            .buffer("x", b.x, all, size)
            .maybe_buffer("residual", b.residual.map(|r| r.0), all, size)
            .buffer("w", b.w, cols * size, size)
            .maybe_buffer("sum", b.residual.map(|r| r.1), all, size)
            .buffer("y", b.y, all, size)
            .arg(Arg::I32(cols as i32))
            .arg(Arg::F32(eps));
    exec.run(&launch)
}

/// The backward's buffers; `d_add` is the gradient reaching the fused form's sum.
pub(crate) struct Backward {
    pub x: Buffer,
    pub w: Buffer,
    pub dy: Buffer,
    pub d_add: Option<Buffer>,
    pub dx: Buffer,
    pub dw: Buffer,
}

/// dx and each row's rstd (a block per row), the weight gradient's partial sums over row
/// chunks (a thread per column and chunk), then their sum in chunk order. With no rows,
/// only the last runs: dw is zero.
pub(crate) fn backward(
    exec: &mut impl Executor,
    element: Element,
    b: Backward,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<()> {
    if cols == 0 {
        return Ok(());
    }
    let (size, suffix, all) = (element.size(), element.suffix(), rows * cols * element.size());
    let rows_per_chunk = rows.div_ceil(CHUNKS).max(1);
    let chunks = rows.div_ceil(rows_per_chunk);
    let column_blocks = cols.div_ceil(COLUMN_THREADS as usize) as u32;
    let partial = exec.scratch(chunks * cols * 4)?;
    if rows > 0 {
        let rstd = exec.scratch(rows * 4)?;
        let dx = Launch::new(SOURCE, format!("rms_norm_bwd_dx_{suffix}"), rows as u32, row_threads(cols))
            .shared(ROW_SCRATCH)
            .buffer("x", b.x, all, size)
            .buffer("w", b.w, cols * size, size)
            .buffer("dy", b.dy, all, size)
            .maybe_buffer("d_add", b.d_add, all, size)
            .buffer("dx", b.dx, all, size)
            .buffer("rstd", rstd, rows * 4, 4)
            .arg(Arg::I32(cols as i32))
            .arg(Arg::F32(eps));
        exec.run(&dx)?;
        let partial_sums =
            Launch::new(SOURCE, format!("rms_norm_bwd_dw_partial_{suffix}"), column_blocks, COLUMN_THREADS)
                .grid_y(chunks as u32)
                .buffer("x", b.x, all, size)
                .buffer("dy", b.dy, all, size)
                .buffer("rstd", rstd, rows * 4, 4)
                .buffer("partial", partial, chunks * cols * 4, 4)
                .arg(Arg::I32(rows as i32))
                .arg(Arg::I32(cols as i32))
                .arg(Arg::I32(rows_per_chunk as i32));
        exec.run(&partial_sums)?;
    }
    let sum = Launch::new(SOURCE, format!("rms_norm_bwd_dw_sum_{suffix}"), column_blocks, COLUMN_THREADS)
        .buffer("partial", partial, chunks * cols * 4, 4)
        .buffer("dw", b.dw, cols * size, size)
        .arg(Arg::I32(chunks as i32))
        .arg(Arg::I32(cols as i32));
    exec.run(&sum)
}
