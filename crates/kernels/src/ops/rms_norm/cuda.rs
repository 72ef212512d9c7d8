//! The RMSNorm ops on a GPU: candle's buffers handed to the launches of [`super::launch`].

use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{Layout, Result, WithDType};

use super::launch::{self, Backward, Forward};
use super::NAME;
use crate::cuda::{output, view, Device};
use crate::launch::Element;

/// The norm of x's rows (`residual` None), or the fused form's `[x + residual, norm]`.
pub(super) fn forward<T: CudaDType + DeviceRepr + WithDType>(
    eps: f32,
    x: (&CudaStorage, &Layout),
    residual: Option<(&CudaStorage, &Layout)>,
    w: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let device = &x.0.device;
    let (xv, wv) = (view::<T>(NAME, x.0, x.1)?, view::<T>(NAME, w.0, w.1)?);
    let residual = residual.map(|(s, l)| view::<T>(NAME, s, l)).transpose()?;
    let (n, cols) = (xv.len(), wv.len());
    let mut out = output::<T>(device, if residual.is_some() { 2 * n } else { n })?;
    let (mut sum, mut y) = out.split_at_mut(if residual.is_some() { n } else { 0 });
    let stream = device.cuda_stream();
    let mut exec = Device::new(device, &stream);
    let buffers = Forward {
        x: exec.read(&xv),
        residual: residual.as_ref().map(|r| (exec.read(r), exec.write(&mut sum))),
        w: exec.read(&wv),
        y: exec.write(&mut y),
    };
    launch::forward(&mut exec, Element::of(NAME, T::DTYPE)?, buffers, n / cols.max(1), cols, eps)?;
    drop(exec);
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
    let (d_add, dy) =
        if fused { (Some(grad.slice(0..n)), grad.slice(n..2 * n)) } else { (None, grad.slice(0..n)) };
    let mut packed = output::<T>(device, n + cols)?;
    let (mut dx, mut dw) = packed.split_at_mut(n);
    let stream = device.cuda_stream();
    let mut exec = Device::new(device, &stream);
    let buffers = Backward {
        x: exec.read(&x),
        w: exec.read(&w),
        dy: exec.read(&dy),
        d_add: d_add.as_ref().map(|d| exec.read(d)),
        dx: exec.write(&mut dx),
        dw: exec.write(&mut dw),
    };
    launch::backward(&mut exec, Element::of(NAME, T::DTYPE)?, buffers, n / cols.max(1), cols, eps)?;
    drop(exec);
    Ok(T::wrap_cuda_slice(packed, device.clone()))
}
