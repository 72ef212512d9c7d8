//! The AdamW step on a GPU: the shard's state tensor and gradient handed to the launch of
//! [`super::launch`].

use candle_core::cuda_backend::CudaStorage;
use candle_core::{Layout, Result};

use super::launch::{self, Buffers};
use super::CHUNK_LEN;
use crate::adamw::Scalars;
use crate::cuda::Device;

/// Steps `state` (`[3, n]`: master, m, v) in place with `grad` (`[n]`).
pub(super) fn step(
    (state, state_layout): (&mut CudaStorage, &Layout),
    (grad, grad_layout): (&CudaStorage, &Layout),
    segments: &[(usize, bool)],
    scalars: Scalars,
) -> Result<()> {
    let n = grad_layout.shape().elem_count();
    let device = state.device.clone();
    let grad = grad.as_cuda_slice::<f32>()?.slice(grad_layout.start_offset()..grad_layout.start_offset() + n);
    let start = state_layout.start_offset();
    let state = state.as_cuda_slice_mut::<f32>()?;
    let mut state = state.slice_mut(start..start + 3 * n);
    let (mut master, mut moments) = state.split_at_mut(n);
    let (mut m, mut v) = moments.split_at_mut(n);
    let stream = device.cuda_stream();
    let mut exec = Device::new(&device, &stream);
    let buffers = Buffers {
        master: exec.write(&mut master),
        m: exec.write(&mut m),
        v: exec.write(&mut v),
        grad: exec.read(&grad),
        compute: None,
    };
    launch::step(&mut exec, buffers, segments, CHUNK_LEN, scalars)
}
