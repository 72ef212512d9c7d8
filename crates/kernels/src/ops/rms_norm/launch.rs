//! The launches of `kernels/rms_norm.cu`, for the device and the emulation alike.

use candle_core::Result;

use crate::launch::{Access, Arg, Buffer, Element, Executor, Launch};

const SOURCE: &str = "rms_norm";

/// Threads per row block of the `_scalar_` row kernels: one element each, up to 512 (the
/// loops stride over longer rows; 512 keeps the block far from the register file's limit).
pub(crate) fn row_threads(cols: usize) -> u32 {
    (cols.div_ceil(32) * 32).clamp(32, 512) as u32
}

/// Elements of a row each thread of the vector row kernels holds in registers
/// (`kRowElements` in `kernels/rms_norm.cu`).
const ROW_ELEMENTS: usize = 16;
/// Threads a row of the vector row kernels may have: 8192 columns.
const MAX_ROW_THREADS: usize = 512;
/// Threads per block the vector row kernels aim for, with several short rows a block.
const ROW_BLOCK_THREADS: usize = 256;

/// How the row kernels run: `Vector` keeps each row in registers, which needs the columns
/// a multiple of the pack and at most 8192, and every row buffer 16-byte aligned.
fn row_access(element: Element, cols: usize, buffers: impl IntoIterator<Item = Buffer>) -> Access {
    let fits = cols.is_multiple_of(Access::Vector.width(element)) && cols <= MAX_ROW_THREADS * ROW_ELEMENTS;
    Access::of(fits, buffers)
}

/// The row kernels' geometry over `rows` rows: the vector kernels' blocks are (threads per
/// row, rows per block), the scalar ones' a row each.
fn row_launch(access: Access, element: Element, kernel: &str, rows: usize, cols: usize) -> Launch {
    match access {
        Access::Vector => {
            let threads = (cols.div_ceil(ROW_ELEMENTS).div_ceil(32) * 32).clamp(32, MAX_ROW_THREADS);
            let rows_per_block = (ROW_BLOCK_THREADS / threads).max(1);
            let mut launch = Launch::new(
                SOURCE,
                access.kernel(kernel, element),
                rows.div_ceil(rows_per_block) as u32,
                threads as u32,
            );
            launch.block[1] = rows_per_block as u32;
            launch
        }
        Access::Scalar => Launch::new(SOURCE, access.kernel(kernel, element), rows as u32, row_threads(cols)),
    }
    .shared(ROW_SCRATCH)
}

/// The rows the vector kernels take after the buffers (the scalar ones have a block a row).
fn with_rows(launch: Launch, access: Access, rows: usize) -> Launch {
    match access {
        Access::Vector => launch.arg(Arg::I32(rows as i32)),
        Access::Scalar => launch,
    }
}

/// `block_sum`'s shared scratch: a float per warp.
const ROW_SCRATCH: usize = 32 * 4;
/// Row chunks for the weight gradient's partial sums.
const CHUNKS: usize = 64;
/// Threads per block of the column kernels, at most (a thread per column or pack of them).
const COLUMN_THREADS: usize = 256;

/// The forward's buffers; `residual` is `(residual, sum)` for the fused form.
pub(crate) struct Forward {
    pub x: Buffer,
    pub residual: Option<(Buffer, Buffer)>,
    pub w: Buffer,
    pub y: Buffer,
}

/// Several rows a block (a row a block in the scalar kernel).
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
    let fused = b.residual.into_iter().flat_map(|(r, sum)| [r, sum]);
    let access = row_access(element, cols, [b.x, b.w, b.y].into_iter().chain(fused));
    let (size, all) = (element.size(), rows * cols * element.size());
    let align = access.align(size);
    let launch = row_launch(access, element, "rms_norm_fwd", rows, cols)
        .buffer("x", b.x, all, align)
        .maybe_buffer("residual", b.residual.map(|r| r.0), all, align)
        .buffer("w", b.w, cols * size, align)
        .maybe_buffer("sum", b.residual.map(|r| r.1), all, align)
        .buffer("y", b.y, all, align);
    let launch = with_rows(launch, access, rows).arg(Arg::I32(cols as i32)).arg(Arg::F32(eps));
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

/// dx and each row's rstd (several rows a block, or a row a block in the scalar kernel),
/// the weight gradient's partial sums over row chunks (a thread per pack of columns, or per
/// column, and chunk), then their sum in chunk order. With no rows, only the last runs: dw
/// is zero.
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
    let (size, all) = (element.size(), rows * cols * element.size());
    let rows_per_chunk = rows.div_ceil(CHUNKS).max(1);
    let chunks = rows.div_ceil(rows_per_chunk);
    let partial = exec.scratch(chunks * cols * 4)?;
    let columns = Access::of(cols.is_multiple_of(Access::Vector.width(element)), [b.x, b.dy, b.dw, partial]);
    let (column_align, units) = (columns.align(size), cols / columns.width(element));
    let column_threads = (units.div_ceil(32) * 32).clamp(32, COLUMN_THREADS);
    let column_blocks = units.div_ceil(column_threads) as u32;
    let column_launch = |kernel: &str| {
        Launch::new(SOURCE, columns.kernel(kernel, element), column_blocks, column_threads as u32)
    };
    if rows > 0 {
        let rstd = exec.scratch(rows * 4)?;
        let access = row_access(element, cols, [b.x, b.w, b.dy, b.dx].into_iter().chain(b.d_add));
        let align = access.align(size);
        let dx = row_launch(access, element, "rms_norm_bwd_dx", rows, cols)
            .buffer("x", b.x, all, align)
            .buffer("w", b.w, cols * size, align)
            .buffer("dy", b.dy, all, align)
            .maybe_buffer("d_add", b.d_add, all, align)
            .buffer("dx", b.dx, all, align)
            .buffer("rstd", rstd, rows * 4, 4);
        exec.run(&with_rows(dx, access, rows).arg(Arg::I32(cols as i32)).arg(Arg::F32(eps)))?;
        let partial_sums = column_launch("rms_norm_bwd_dw_partial")
            .grid_y(chunks as u32)
            .buffer("x", b.x, all, column_align)
            .buffer("dy", b.dy, all, column_align)
            .buffer("rstd", rstd, rows * 4, 4)
            .buffer("partial", partial, chunks * cols * 4, columns.align(4))
            .arg(Arg::I32(rows as i32))
            .arg(Arg::I32(cols as i32))
            .arg(Arg::I32(rows_per_chunk as i32));
        exec.run(&partial_sums)?;
    }
    let sum = column_launch("rms_norm_bwd_dw_sum")
        .buffer("partial", partial, chunks * cols * 4, columns.align(4))
        .buffer("dw", b.dw, cols * size, column_align)
        .arg(Arg::I32(chunks as i32))
        .arg(Arg::I32(cols as i32));
    exec.run(&sum)
}
