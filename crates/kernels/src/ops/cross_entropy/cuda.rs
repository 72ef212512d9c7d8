//! The loss rows on a GPU: candle's buffers handed to the launches of [`super::launch`].

use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{Layout, Result, WithDType};

use super::launch::{self, Grad, Rows};
use super::NAME;
use crate::cuda::{output, view, Device};
use crate::launch::Element;

/// `[loss..., lse...]`, f32. The targets are vocabulary ids: the model checks every label
/// before the loss.
pub(super) fn rows<T: CudaDType + DeviceRepr + WithDType>(
    logits: (&CudaStorage, &Layout),
    targets: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let device = &logits.0.device;
    let (logits, targets) = (view::<T>(NAME, logits.0, logits.1)?, view::<u32>(NAME, targets.0, targets.1)?);
    let rows = targets.len();
    let mut out = output::<f32>(device, 2 * rows)?;
    let (mut loss, mut lse) = out.split_at_mut(rows);
    let stream = device.cuda_stream();
    let mut exec = Device::new(device, &stream);
    let buffers = Rows {
        logits: exec.read(&logits),
        targets: exec.read(&targets),
        loss: exec.write(&mut loss),
        lse: exec.write(&mut lse),
    };
    launch::rows(&mut exec, Element::of(NAME, T::DTYPE)?, buffers, rows, logits.len() / rows.max(1))?;
    drop(exec);
    Ok(f32::wrap_cuda_slice(out, device.clone()))
}

/// `softmax - one_hot(target)` in the logits' dtype, from the rows' log-sum-exp.
pub(super) fn grad<T: CudaDType + DeviceRepr + WithDType>(
    logits: (&CudaStorage, &Layout),
    targets: (&CudaStorage, &Layout),
    lse: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let device = &logits.0.device;
    let logits = view::<T>(NAME, logits.0, logits.1)?;
    let (targets, lse) = (view::<u32>(NAME, targets.0, targets.1)?, view::<f32>(NAME, lse.0, lse.1)?);
    let (rows, n) = (targets.len(), logits.len());
    let mut d_logits = output::<T>(device, n)?;
    let stream = device.cuda_stream();
    let mut exec = Device::new(device, &stream);
    let buffers = Grad {
        logits: exec.read(&logits),
        targets: exec.read(&targets),
        lse: exec.read(&lse),
        d_logits: exec.write(&mut d_logits),
    };
    launch::grad(&mut exec, Element::of(NAME, T::DTYPE)?, buffers, rows, n / rows.max(1))?;
    drop(exec);
    Ok(T::wrap_cuda_slice(d_logits, device.clone()))
}
