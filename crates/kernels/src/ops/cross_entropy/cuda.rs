//! The loss rows on a GPU: candle's buffers handed to the launch of [`super::launch`].

use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{Layout, Result, Shape};

use super::launch::{self, Buffers};
use super::NAME;
use crate::cuda::{output, view, Device};

/// `[d_logits..., loss...]` with the gradient, `[loss...]` without. The targets are
/// vocabulary ids: the model checks every label before the loss.
pub(super) fn rows(
    with_grad: bool,
    logits: (&CudaStorage, &Layout),
    targets: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    let device = &logits.0.device;
    let (logits, targets) =
        (view::<f32>(NAME, logits.0, logits.1)?, view::<u32>(NAME, targets.0, targets.1)?);
    let (rows, n) = (targets.len(), logits.len());
    let mut out = output::<f32>(device, if with_grad { n + rows } else { rows })?;
    let (mut d_logits, mut loss) = out.split_at_mut(if with_grad { n } else { 0 });
    let stream = device.cuda_stream();
    let mut exec = Device::new(device, &stream);
    let d_logits = if with_grad { Some(exec.write(&mut d_logits)) } else { None };
    let buffers = Buffers {
        logits: exec.read(&logits),
        targets: exec.read(&targets),
        d_logits,
        loss: exec.write(&mut loss),
    };
    launch::rows(&mut exec, buffers, rows, n / rows.max(1))?;
    drop(exec);
    let len = if with_grad { n + rows } else { rows };
    Ok((f32::wrap_cuda_slice(out, device.clone()), Shape::from(len)))
}
