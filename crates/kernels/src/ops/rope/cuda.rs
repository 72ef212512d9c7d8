//! RoPE on a GPU: candle's buffers handed to the launch of [`super::launch`].

use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::{Layout, Result, WithDType};

use super::launch::{self, Buffers};
use super::NAME;
use crate::cuda::{output, view, Device};
use crate::launch::Element;

pub(super) fn launch<T: CudaDType + DeviceRepr + WithDType>(
    backward: bool,
    x: (&CudaStorage, &Layout),
    cos: (&CudaStorage, &Layout),
    sin: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let device = &x.0.device;
    let &[tokens, heads, head_dim] = x.1.dims() else { candle_core::bail!("{NAME}: x must be 3-d") };
    let xv = view::<T>(NAME, x.0, x.1)?;
    let (cos, sin) = (view::<f32>(NAME, cos.0, cos.1)?, view::<f32>(NAME, sin.0, sin.1)?);
    let mut y = output::<T>(device, xv.len())?;
    let stream = device.cuda_stream();
    let mut exec = Device::new(device, &stream);
    let buffers =
        Buffers { x: exec.read(&xv), cos: exec.read(&cos), sin: exec.read(&sin), y: exec.write(&mut y) };
    launch::rotate(&mut exec, Element::of(NAME, T::DTYPE)?, backward, buffers, [tokens, heads, head_dim])?;
    drop(exec);
    Ok(T::wrap_cuda_slice(y, device.clone()))
}
