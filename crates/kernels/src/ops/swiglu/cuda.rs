//! SwiGLU on a GPU: candle's buffers handed to the launches of [`super::launch`].

use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{Layout, Result, WithDType};

use super::launch;
use super::NAME;
use crate::cuda::{output, view, Device};
use crate::launch::Element;

/// The forward (`backward` false: args gate, up) or the backward (args gate, up, dy;
/// output d_gate then d_up).
pub(super) fn launch<T: CudaDType + DeviceRepr + WithDType>(
    backward: bool,
    args: [(&CudaStorage, &Layout); 3],
) -> Result<CudaStorage> {
    let device = &args[0].0.device;
    let element = Element::of(NAME, T::DTYPE)?;
    let gate = view::<T>(NAME, args[0].0, args[0].1)?;
    let up = view::<T>(NAME, args[1].0, args[1].1)?;
    let dy = view::<T>(NAME, args[2].0, args[2].1)?;
    let n = gate.len();
    let mut out = output::<T>(device, if backward { 2 * n } else { n })?;
    let (mut first, mut second) = out.split_at_mut(if backward { n } else { 0 });
    let stream = device.cuda_stream();
    let mut exec = Device::new(device, &stream);
    let (gate, up) = (exec.read(&gate), exec.read(&up));
    if backward {
        let buffers = [gate, up, exec.read(&dy), exec.write(&mut first), exec.write(&mut second)];
        launch::backward(&mut exec, element, buffers, n)?;
    } else {
        let buffers = [gate, up, exec.write(&mut second)];
        launch::forward(&mut exec, element, buffers, n)?;
    }
    drop(exec);
    Ok(T::wrap_cuda_slice(out, device.clone()))
}
