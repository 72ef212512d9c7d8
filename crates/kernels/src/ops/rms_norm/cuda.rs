//! The launches of `kernels/rms_norm.cu` for the RMSNorm ops.

use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaStorage, WrapErr};
use candle_core::{Layout, Result, WithDType};

use super::NAME;
use crate::cuda::{config, function, output, suffix, view};

/// Threads per row block: one element each, up to 512 (the loops stride over longer
/// rows; 512 keeps the block far from the register file's limit).
fn threads(cols: usize) -> u32 {
    (cols.div_ceil(32) * 32).clamp(32, 512) as u32
}

/// Row chunks for the weight gradient's partial sums.
const CHUNKS: usize = 64;

/// The norm of x's rows (`residual` None), or the fused form's `[x + residual, norm]`.
pub(super) fn forward<T: CudaDType + DeviceRepr + WithDType>(
    eps: f32,
    x: (&CudaStorage, &Layout),
    residual: Option<(&CudaStorage, &Layout)>,
    w: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let device = &x.0.device;
    let (xv, wv) = (view::<T>(NAME, x.0, x.1)?, view::<T>(NAME, w.0, w.1)?);
    let n = xv.len();
    let (rows, cols) = (n / wv.len().max(1), wv.len() as i32);
    let mut out = output::<T>(device, if residual.is_some() { 2 * n } else { n })?;
    if rows == 0 {
        return Ok(T::wrap_cuda_slice(out, device.clone()));
    }
    let func = function(device, "rms_norm", &format!("rms_norm_fwd_{}", suffix(NAME, T::DTYPE)?))?;
    let stream = device.cuda_stream();
    let null: u64 = 0;
    let mut launch = stream.launch_builder(&func);
    launch.arg(&xv);
    let residual = residual.map(|(s, l)| view::<T>(NAME, s, l)).transpose()?;
    let (mut sum, mut y) = out.split_at_mut(if residual.is_some() { n } else { 0 });
    match &residual {
        Some(r) => launch.arg(r).arg(&wv).arg(&mut sum),
        None => launch.arg(&null).arg(&wv).arg(&null),
    };
    launch.arg(&mut y).arg(&cols).arg(&eps);
    // SAFETY: the kernel reads rows x cols elements of x (and of residual), cols of w, and
    // writes rows x cols of y (and of the sum): the sizes of these buffers.
    unsafe { launch.launch(config(rows as u32, threads(wv.len()), 32 * 4)) }.w()?;
    drop(launch);
    Ok(T::wrap_cuda_slice(out, device.clone()))
}

/// `[dx, dw]`; with `fused`, the gradient input is `[d_sum, dy]` and d_sum is added to dx.
pub(super) fn backward<T: CudaDType + DeviceRepr + WithDType>(
    eps: f32,
    fused: bool,
    args: [(&CudaStorage, &Layout); 3],
) -> Result<CudaStorage> {
    let device = &args[0].0.device;
    let x = view::<T>(NAME, args[0].0, args[0].1)?;
    let w = view::<T>(NAME, args[1].0, args[1].1)?;
    let grad = view::<T>(NAME, args[2].0, args[2].1)?;
    let (n, cols) = (x.len(), w.len());
    let rows = n / cols.max(1);
    let mut packed = output::<T>(device, n + cols)?;
    if rows == 0 {
        return Ok(T::wrap_cuda_slice(packed, device.clone()));
    }
    let (d_add, dy) =
        if fused { (Some(grad.slice(0..n)), grad.slice(n..2 * n)) } else { (None, grad.slice(0..n)) };
    let chunks = CHUNKS.min(rows);
    let rows_per_chunk = rows.div_ceil(chunks);
    let chunks = rows.div_ceil(rows_per_chunk);
    let mut rstd = output::<f32>(device, rows)?;
    let mut partial = output::<f32>(device, chunks * cols)?;
    let suffix = suffix(NAME, T::DTYPE)?;
    let stream = device.cuda_stream();
    let (rows_i, cols_i, chunks_i, per_chunk_i) =
        (rows as i32, cols as i32, chunks as i32, rows_per_chunk as i32);
    let column_blocks = cols.div_ceil(256) as u32;
    let null: u64 = 0;
    let (mut dx, mut dw) = packed.split_at_mut(n);

    let func = function(device, "rms_norm", &format!("rms_norm_bwd_dx_{suffix}"))?;
    let mut launch = stream.launch_builder(&func);
    launch.arg(&x).arg(&w).arg(&dy);
    match &d_add {
        Some(d) => launch.arg(d),
        None => launch.arg(&null),
    };
    launch.arg(&mut dx).arg(&mut rstd).arg(&cols_i).arg(&eps);
    // SAFETY: one block per row over buffers of rows x cols (rstd: rows).
    unsafe { launch.launch(config(rows as u32, threads(cols), 32 * 4)) }.w()?;

    let func = function(device, "rms_norm", &format!("rms_norm_bwd_dw_partial_{suffix}"))?;
    let mut launch = stream.launch_builder(&func);
    launch.arg(&x).arg(&dy).arg(&rstd).arg(&mut partial).arg(&rows_i).arg(&cols_i).arg(&per_chunk_i);
    let mut grid = config(column_blocks, 256, 0);
    grid.grid_dim.1 = chunks as u32;
    // SAFETY: each (column, chunk) thread writes partial[chunk * cols + column], and reads
    // rows of x, dy and rstd inside their sizes.
    unsafe { launch.launch(grid) }.w()?;

    let func = function(device, "rms_norm", &format!("rms_norm_bwd_dw_sum_{suffix}"))?;
    let mut launch = stream.launch_builder(&func);
    launch.arg(&partial).arg(&mut dw).arg(&chunks_i).arg(&cols_i);
    // SAFETY: one thread per column reads `chunks` partial rows and writes dw[column].
    unsafe { launch.launch(config(column_blocks, 256, 0)) }.w()?;
    drop(launch);
    Ok(T::wrap_cuda_slice(packed, device.clone()))
}
