//! RMSNorm as transformers' `Qwen2RMSNorm` computes it: normalise in f32, round to the
//! input's dtype, then scale by the weight (rounded again). Kernels: `kernels/rms_norm.cu`.
//!
//! The backward is one op over (x, w, dy) whose output packs dx (`rows * cols`) and dw
//! (`cols`) in the input's dtype; dw is summed in fixed row chunks, so it is the same on
//! every run.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{by_dtype, cpu_slice, rows_per_task, same_dtype, Real};

const NAME: &str = "rms-norm";

/// `weight * (x / sqrt(mean(x^2, last dim) + eps))`, for `x` of any rank.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let cols = x.dim(D::Minus1)?;
    if weight.dims() != [cols] {
        bail!("{NAME}: weight of shape {:?} for rows of {cols}", weight.dims())
    }
    x.contiguous()?.apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}

/// The gradients `(dx, dw)` of [`rms_norm`] for the output's gradient `dy`.
pub fn rms_norm_backward(x: &Tensor, weight: &Tensor, dy: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    let packed = x.apply_op3_no_bwd(&weight, &dy.contiguous()?, &RmsNormBackward { eps: eps as f32 })?;
    let (n, cols) = (x.elem_count(), weight.elem_count());
    Ok((packed.narrow(0, 0, n)?.reshape(x.shape())?, packed.narrow(0, n, cols)?))
}

struct RmsNorm {
    eps: f32,
}

struct RmsNormBackward {
    eps: f32,
}

/// `1 / sqrt(mean(row^2) + eps)`, summed in f64.
fn inv_rms<T: Real>(row: &[T], eps: f32) -> f32 {
    let squares: f64 = row.iter().map(|v| (v.to_f32() as f64).powi(2)).sum();
    (1.0 / (squares / row.len() as f64 + eps as f64).sqrt()) as f32
}

fn forward<T: Real>(x: &[T], w: &[T], eps: f32) -> Vec<T> {
    let cols = w.len();
    let mut y = vec![T::from_f32(0.0); x.len()];
    let task = cols * rows_per_task(cols);
    y.par_chunks_mut(task).zip(x.par_chunks(task)).for_each(|(y, x)| {
        for (y, x) in y.chunks_mut(cols).zip(x.chunks(cols)) {
            let r = inv_rms(x, eps);
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = T::from_f32(w.to_f32() * T::round(x.to_f32() * r));
            }
        }
    });
    y
}

/// dx for every row, then dw after it: `[rows * cols + cols]`.
fn backward<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f32) -> Vec<T> {
    let cols = w.len();
    let mut packed = vec![T::from_f32(0.0); x.len() + cols];
    let (dx, dw) = packed.split_at_mut(x.len());
    let task = cols * rows_per_task(cols);
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(task)
        .zip(x.par_chunks(task).zip(dy.par_chunks(task)))
        .map(|(dx, (x, dy))| {
            let mut partial = vec![0.0f32; cols];
            for (dx, (x, dy)) in dx.chunks_mut(cols).zip(x.chunks(cols).zip(dy.chunks(cols))) {
                let r = inv_rms(x, eps);
                let dot: f32 =
                    x.iter().zip(dy).zip(w).map(|((x, dy), w)| dy.to_f32() * w.to_f32() * x.to_f32()).sum();
                let mean = dot * r / cols as f32;
                for c in 0..cols {
                    let n = x[c].to_f32() * r;
                    dx[c] = T::from_f32(r * (dy[c].to_f32() * w[c].to_f32() - n * mean));
                    partial[c] += dy[c].to_f32() * n;
                }
            }
            partial
        })
        .collect();
    for (c, dw) in dw.iter_mut().enumerate() {
        *dw = T::from_f32(partials.iter().map(|p| p[c]).sum());
    }
    packed
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Real>(
            eps: f32,
            xs: &CpuStorage,
            xl: &Layout,
            ws: &CpuStorage,
            wl: &Layout,
        ) -> Result<CpuStorage> {
            let y = forward(cpu_slice::<T>(NAME, xs, xl)?, cpu_slice::<T>(NAME, ws, wl)?, eps);
            Ok(T::to_cpu_storage_owned(y))
        }
        let dtype = same_dtype(NAME, &[xs.dtype(), ws.dtype()])?;
        Ok((by_dtype!(NAME, dtype, run(self.eps, xs, xl, ws, wl))?, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dtype = same_dtype(NAME, &[xs.dtype(), ws.dtype()])?;
        let y = crate::cuda::by_cuda_dtype!(NAME, dtype, cuda::forward(self.eps, xs, xl, ws, wl))?;
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = rms_norm_backward(x, w, dy, self.eps as f64)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: Real>(eps: f32, args: [(&CpuStorage, &Layout); 3]) -> Result<CpuStorage> {
            let [x, w, dy] = args.map(|(s, l)| cpu_slice::<T>(NAME, s, l));
            Ok(T::to_cpu_storage_owned(backward(x?, w?, dy?, eps)))
        }
        let dtype = same_dtype(NAME, &[xs.dtype(), ws.dtype(), ds.dtype()])?;
        let packed = by_dtype!(NAME, dtype, run(self.eps, [(xs, xl), (ws, wl), (ds, dl)]))?;
        Ok((packed, Shape::from(xl.shape().elem_count() + wl.shape().elem_count())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dtype = same_dtype(NAME, &[xs.dtype(), ws.dtype(), ds.dtype()])?;
        let packed = crate::cuda::by_cuda_dtype!(
            NAME,
            dtype,
            cuda::backward(self.eps, [(xs, xl), (ws, wl), (ds, dl)])
        )?;
        Ok((packed, Shape::from(xl.shape().elem_count() + wl.shape().elem_count())))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, PushKernelArg};
    use candle_core::cuda_backend::{CudaDType, CudaStorage, WrapErr};
    use candle_core::{Layout, Result, WithDType};

    use super::NAME;
    use crate::cuda::{config, function, output, suffix, view};

    /// Threads per row block: enough for one element each up to 1024.
    fn threads(cols: usize) -> u32 {
        (cols.div_ceil(32) * 32).clamp(32, 1024) as u32
    }

    pub(super) fn forward<T: CudaDType + DeviceRepr + WithDType>(
        eps: f32,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<CudaStorage> {
        let device = &xs.device;
        let (x, w) = (view::<T>(NAME, xs, xl)?, view::<T>(NAME, ws, wl)?);
        let (rows, cols) = (x.len() / w.len().max(1), w.len() as i32);
        let mut y = output::<T>(device, x.len())?;
        if rows > 0 {
            let func = function(device, "rms_norm", &format!("rms_norm_fwd_{}", suffix(NAME, T::DTYPE)?))?;
            let stream = device.cuda_stream();
            let mut launch = stream.launch_builder(&func);
            launch.arg(&x).arg(&w).arg(&mut y).arg(&cols).arg(&eps);
            // SAFETY: the kernel reads rows x cols elements of x and cols of w, and writes
            // rows x cols of y, the sizes of these buffers.
            unsafe { launch.launch(config(rows as u32, threads(w.len()), 32 * 4)) }.w()?;
        }
        Ok(T::wrap_cuda_slice(y, device.clone()))
    }

    /// Row chunks for the weight gradient's partial sums.
    const CHUNKS: usize = 64;

    pub(super) fn backward<T: CudaDType + DeviceRepr + WithDType>(
        eps: f32,
        args: [(&CudaStorage, &Layout); 3],
    ) -> Result<CudaStorage> {
        let device = &args[0].0.device;
        let x = view::<T>(NAME, args[0].0, args[0].1)?;
        let w = view::<T>(NAME, args[1].0, args[1].1)?;
        let dy = view::<T>(NAME, args[2].0, args[2].1)?;
        let (n, cols) = (x.len(), w.len());
        let rows = n / cols.max(1);
        let mut packed = output::<T>(device, n + cols)?;
        if rows == 0 {
            return Ok(T::wrap_cuda_slice(packed, device.clone()));
        }
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
        {
            let (mut dx, mut dw) = packed.split_at_mut(n);
            let func = function(device, "rms_norm", &format!("rms_norm_bwd_dx_{suffix}"))?;
            let mut launch = stream.launch_builder(&func);
            launch.arg(&x).arg(&w).arg(&dy).arg(&mut dx).arg(&mut rstd).arg(&cols_i).arg(&eps);
            // SAFETY: one block per row over buffers of rows x cols (rstd: rows).
            unsafe { launch.launch(config(rows as u32, threads(cols), 32 * 4)) }.w()?;

            let func = function(device, "rms_norm", &format!("rms_norm_bwd_dw_partial_{suffix}"))?;
            let mut launch = stream.launch_builder(&func);
            launch.arg(&x).arg(&dy).arg(&rstd).arg(&mut partial).arg(&rows_i).arg(&cols_i).arg(&per_chunk_i);
            let mut grid = config(column_blocks, 256, 0);
            grid.grid_dim.1 = chunks as u32;
            // SAFETY: each (column, chunk) thread writes partial[chunk * cols + column],
            // and reads rows of x, dy and rstd inside their sizes.
            unsafe { launch.launch(grid) }.w()?;

            let func = function(device, "rms_norm", &format!("rms_norm_bwd_dw_sum_{suffix}"))?;
            let mut launch = stream.launch_builder(&func);
            launch.arg(&partial).arg(&mut dw).arg(&chunks_i).arg(&cols_i);
            // SAFETY: one thread per column reads `chunks` partial rows and writes dw[column].
            unsafe { launch.launch(config(column_blocks, 256, 0)) }.w()?;
        }
        Ok(T::wrap_cuda_slice(packed, device.clone()))
    }
}
