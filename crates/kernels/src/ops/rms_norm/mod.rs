//! RMSNorm as transformers' `Qwen2RMSNorm` computes it: normalise in f32, round to the
//! input's dtype, then scale by the weight (rounded again), alone or fused with the
//! residual add before it (`s = x + residual`, rounded, then normalised; both `s` and the
//! norm are outputs). Kernels: `kernels/rms_norm.cu`.
//!
//! The backward is one op whose output packs dx (`rows * cols`) and dw (`cols`) in the
//! input's dtype; dw is summed in fixed row chunks, so it is the same on every run. For the
//! fused form it also adds the gradient that reaches `s` directly, and dx is then the
//! gradient of both `x` and `residual`.

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "emulation")]
pub(crate) mod emulated;
#[cfg(any(feature = "cuda", feature = "emulation"))]
mod launch;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{by_dtype, cpu_slice, rows_per_task, same_dtype, CpuFloat, CPU_GRAIN};

const NAME: &str = "rms-norm";

fn check_weight(x: &Tensor, weight: &Tensor) -> Result<()> {
    let cols = x.dim(D::Minus1)?;
    if weight.dims() != [cols] {
        bail!("{NAME}: weight of shape {:?} for rows of {cols}", weight.dims())
    }
    Ok(())
}

/// `weight * (x / sqrt(mean(x^2, last dim) + eps))`, for `x` of any rank.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    check_weight(x, weight)?;
    x.contiguous()?.apply_op2(&weight.contiguous()?, RmsNorm { eps: eps as f32 })
}

/// The residual add and the norm after it in one pass: `(s, rms_norm(s))` with
/// `s = x + residual` rounded to the dtype.
pub fn add_rms_norm(x: &Tensor, residual: &Tensor, weight: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    check_weight(x, weight)?;
    if residual.dims() != x.dims() {
        bail!("{NAME}: residual {:?} for x {:?}", residual.dims(), x.dims())
    }
    let packed = x.contiguous()?.apply_op3(
        &residual.contiguous()?,
        &weight.contiguous()?,
        AddRmsNorm { eps: eps as f32 },
    )?;
    let n = x.elem_count();
    Ok((packed.narrow(0, 0, n)?.reshape(x.shape())?, packed.narrow(0, n, n)?.reshape(x.shape())?))
}

/// The gradients `(dx, dw)` of [`rms_norm`] for the output's gradient `dy`.
pub fn rms_norm_backward(x: &Tensor, weight: &Tensor, dy: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    backward_op(x, weight, dy, RmsNormBackward { eps: eps as f32, fused: false })
}

fn backward_op(x: &Tensor, weight: &Tensor, grad: &Tensor, op: RmsNormBackward) -> Result<(Tensor, Tensor)> {
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    let packed = x.apply_op3_no_bwd(&weight, &grad.contiguous()?, &op)?;
    let (n, cols) = (x.elem_count(), weight.elem_count());
    Ok((packed.narrow(0, 0, n)?.reshape(x.shape())?, packed.narrow(0, n, cols)?))
}

struct RmsNorm {
    eps: f32,
}

struct AddRmsNorm {
    eps: f32,
}

/// Inputs (x, w, grad): grad is dy, or for the fused form `[d_s, dy]` (the gradients of
/// the op's two packed outputs).
struct RmsNormBackward {
    eps: f32,
    fused: bool,
}

/// `1 / sqrt(mean(row^2) + eps)`, summed in f64.
fn inv_rms<T: CpuFloat>(row: &[T], eps: f32) -> f32 {
    let squares: f64 = row.iter().map(|v| (v.to_f32() as f64).powi(2)).sum();
    (1.0 / (squares / row.len() as f64 + eps as f64).sqrt()) as f32
}

/// The norm of each row of `x` into `y`.
fn forward_into<T: CpuFloat>(x: &[T], w: &[T], y: &mut [T], eps: f32) {
    let cols = w.len();
    let task = cols * rows_per_task(cols);
    y.par_chunks_mut(task).zip(x.par_chunks(task)).for_each(|(y, x)| {
        for (y, x) in y.chunks_mut(cols).zip(x.chunks(cols)) {
            let r = inv_rms(x, eps);
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = T::from_f32(w.to_f32() * T::round(x.to_f32() * r));
            }
        }
    });
}

/// `[s, norm(s)]` with `s = x + residual`.
fn add_forward<T: CpuFloat>(x: &[T], residual: &[T], w: &[T], eps: f32) -> Vec<T> {
    let mut packed = vec![T::from_f32(0.0); 2 * x.len()];
    let (sum, y) = packed.split_at_mut(x.len());
    sum.par_chunks_mut(CPU_GRAIN).zip(x.par_chunks(CPU_GRAIN).zip(residual.par_chunks(CPU_GRAIN))).for_each(
        |(s, (x, r))| {
            for ((s, x), r) in s.iter_mut().zip(x).zip(r) {
                *s = T::from_f32(x.to_f32() + r.to_f32());
            }
        },
    );
    forward_into(sum, w, y, eps);
    packed
}

/// dx (plus `d_add` when given) for every row, then dw after it: `[rows * cols + cols]`.
fn backward<T: CpuFloat>(x: &[T], w: &[T], dy: &[T], d_add: Option<&[T]>, eps: f32) -> Vec<T> {
    let cols = w.len();
    let mut packed = vec![T::from_f32(0.0); x.len() + cols];
    let (dx, dw) = packed.split_at_mut(x.len());
    let task = cols * rows_per_task(cols);
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(task)
        .zip(x.par_chunks(task).zip(dy.par_chunks(task)))
        .enumerate()
        .map(|(k, (dx, (x, dy)))| {
            let d_add = d_add.map(|d| &d[k * task..(k * task + dx.len())]);
            let mut partial = vec![0.0f32; cols];
            for (row, (dx, (x, dy))) in
                dx.chunks_mut(cols).zip(x.chunks(cols).zip(dy.chunks(cols))).enumerate()
            {
                let r = inv_rms(x, eps);
                let dot: f32 =
                    x.iter().zip(dy).zip(w).map(|((x, dy), w)| dy.to_f32() * w.to_f32() * x.to_f32()).sum();
                let mean = dot * r / cols as f32;
                for c in 0..cols {
                    let n = x[c].to_f32() * r;
                    let extra = d_add.map_or(0.0, |d| d[row * cols + c].to_f32());
                    dx[c] = T::from_f32(r * (dy[c].to_f32() * w[c].to_f32() - n * mean) + extra);
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
        fn run<T: CpuFloat>(
            eps: f32,
            x: (&CpuStorage, &Layout),
            w: (&CpuStorage, &Layout),
        ) -> Result<CpuStorage> {
            let x = cpu_slice::<T>(NAME, x.0, x.1)?;
            let mut y = vec![T::from_f32(0.0); x.len()];
            forward_into(x, cpu_slice::<T>(NAME, w.0, w.1)?, &mut y, eps);
            Ok(T::to_cpu_storage_owned(y))
        }
        let dtype = same_dtype(NAME, &[xs.dtype(), ws.dtype()])?;
        Ok((by_dtype!(NAME, dtype, run(self.eps, (xs, xl), (ws, wl)))?, xl.shape().clone()))
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
        let y = crate::cuda::by_cuda_dtype!(NAME, dtype, cuda::forward(self.eps, (xs, xl), None, (ws, wl)))?;
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

impl CustomOp3 for AddRmsNorm {
    fn name(&self) -> &'static str {
        "add-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: CpuFloat>(eps: f32, args: [(&CpuStorage, &Layout); 3]) -> Result<CpuStorage> {
            let [x, r, w] = args.map(|(s, l)| cpu_slice::<T>(NAME, s, l));
            Ok(T::to_cpu_storage_owned(add_forward(x?, r?, w?, eps)))
        }
        let dtype = same_dtype(NAME, &[xs.dtype(), rs.dtype(), ws.dtype()])?;
        let packed = by_dtype!(NAME, dtype, run(self.eps, [(xs, xl), (rs, rl), (ws, wl)]))?;
        Ok((packed, Shape::from(2 * xl.shape().elem_count())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        rs: &candle_core::CudaStorage,
        rl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dtype = same_dtype(NAME, &[xs.dtype(), rs.dtype(), ws.dtype()])?;
        let packed = crate::cuda::by_cuda_dtype!(
            NAME,
            dtype,
            cuda::forward(self.eps, (xs, xl), Some((rs, rl)), (ws, wl))
        )?;
        Ok((packed, Shape::from(2 * xl.shape().elem_count())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _residual: &Tensor,
        w: &Tensor,
        packed: &Tensor,
        d_packed: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let sum = packed.narrow(0, 0, x.elem_count())?.reshape(x.shape())?;
        let (d_sum, dw) = backward_op(&sum, w, d_packed, RmsNormBackward { eps: self.eps, fused: true })?;
        Ok((Some(d_sum.clone()), Some(d_sum), Some(dw)))
    }
}

impl RmsNormBackward {
    /// The gradient input holds dy, or `[d_s, dy]` for the fused form.
    fn check_grad(&self, xl: &Layout, gl: &Layout) -> Result<()> {
        let expected = xl.shape().elem_count() * if self.fused { 2 } else { 1 };
        if gl.shape().elem_count() != expected {
            bail!("{NAME}: a gradient of {} elements where {expected} are due", gl.shape().elem_count())
        }
        Ok(())
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
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: CpuFloat>(eps: f32, fused: bool, args: [(&CpuStorage, &Layout); 3]) -> Result<CpuStorage> {
            let [x, w, grad] = args.map(|(s, l)| cpu_slice::<T>(NAME, s, l));
            let (x, grad) = (x?, grad?);
            let (d_add, dy) = if fused { grad.split_at(x.len()) } else { (&grad[..0], grad) };
            Ok(T::to_cpu_storage_owned(backward(x, w?, dy, fused.then_some(d_add), eps)))
        }
        let dtype = same_dtype(NAME, &[xs.dtype(), ws.dtype(), gs.dtype()])?;
        self.check_grad(xl, gl)?;
        let packed = by_dtype!(NAME, dtype, run(self.eps, self.fused, [(xs, xl), (ws, wl), (gs, gl)]))?;
        Ok((packed, Shape::from(xl.shape().elem_count() + wl.shape().elem_count())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dtype = same_dtype(NAME, &[xs.dtype(), ws.dtype(), gs.dtype()])?;
        self.check_grad(xl, gl)?;
        let packed = crate::cuda::by_cuda_dtype!(
            NAME,
            dtype,
            cuda::backward(self.eps, self.fused, [(xs, xl), (ws, wl), (gs, gl)])
        )?;
        Ok((packed, Shape::from(xl.shape().elem_count() + wl.shape().elem_count())))
    }
}
