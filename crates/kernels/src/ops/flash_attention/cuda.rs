//! Flash attention on a GPU: candle's buffers handed to the launches of [`super::launch`].
//! Outputs start as zeros, so padding rows past the last segment read as zeros.

use candle_core::cuda_backend::CudaStorage;
use candle_core::op::BackpropOp;
use candle_core::{bail, DType, Layout, Result, Storage, Tensor};
use half::bf16;

use super::launch::{self, BackwardBuffers, ForwardBuffers, Kernels};
use super::NAME;
use crate::attention::{AttentionShape, Segments};
use crate::cuda::{view, zeros, Device};

fn shape(q: &Layout, k: &Layout, v: &Layout, cu: Segments<'_>) -> Result<AttentionShape> {
    let (&[q_tokens, q_heads, head_dim], &[k_tokens, kv_heads, k_dim]) = (q.dims(), k.dims()) else {
        bail!("{NAME}: q {:?} and k {:?} must be [tokens, heads, head_dim]", q.dims(), k.dims())
    };
    if k_dim != head_dim || v.dims() != k.dims() {
        bail!("{NAME}: q {:?}, k {:?}, v {:?} do not fit", q.dims(), k.dims(), v.dims())
    }
    let shape = AttentionShape { q_tokens, k_tokens, q_heads, kv_heads, head_dim };
    shape.check(cu).map_err(candle_core::Error::Msg)?;
    Ok(shape)
}

/// The kernels for the device's compute capability: Hopper's on 9.0, mma.sync elsewhere.
fn kernels_for(device: &candle_core::CudaDevice) -> Result<Kernels> {
    let (major, minor) = device
        .cuda_stream()
        .context()
        .compute_capability()
        .map_err(|e| candle_core::Error::Msg(format!("{NAME}: reading the compute capability: {e:?}")))?;
    Ok(Kernels::for_capability(major as u32, minor as u32))
}

fn cuda_storage(storage: &Storage) -> Result<&CudaStorage> {
    match storage {
        Storage::Cuda(s) => Ok(s),
        _ => bail!("{NAME}: a tensor that is not on the GPU"),
    }
}

/// The output and the log-sum-exp `[q_heads, q_tokens]` of every query row.
pub(super) fn forward(
    cu: Segments<'_>,
    scale: f32,
    q: (&CudaStorage, &Layout),
    k: (&CudaStorage, &Layout),
    v: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Tensor)> {
    let s = shape(q.1, k.1, v.1, cu)?;
    let device = &q.0.device;
    let (qv, kv, vv) =
        (view::<bf16>(NAME, q.0, q.1)?, view::<bf16>(NAME, k.0, k.1)?, view::<bf16>(NAME, v.0, v.1)?);
    let mut out = zeros::<bf16>(device, qv.len())?;
    let mut lse = zeros::<f32>(device, s.q_heads * s.q_tokens)?;
    let kernels = kernels_for(device)?;
    let stream = device.cuda_stream();
    let mut exec = Device::new(device, &stream);
    let buffers = ForwardBuffers {
        q: exec.read(&qv),
        k: exec.read(&kv),
        v: exec.read(&vv),
        out: exec.write(&mut out),
        lse: exec.write(&mut lse),
    };
    launch::forward(&mut exec, s, buffers, cu, scale, kernels)?;
    drop(exec);
    let lse = CudaStorage::wrap_cuda_slice(lse, device.clone());
    let lse = Tensor::from_storage(Storage::Cuda(lse), (s.q_heads, s.q_tokens), BackpropOp::none(), false);
    Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), lse))
}

/// dQ, dK, dV from `[q, k, v, out, d_out]` (contiguous and 16-byte aligned, as the op's
/// inputs and `aligned` give them) and the forward's lse.
pub(super) fn backward(
    cu: Segments<'_>,
    scale: f32,
    tensors: [&Tensor; 5],
    lse: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let [q, k, v, _, _] = tensors;
    for t in tensors {
        if t.dtype() != DType::BF16 {
            bail!("{NAME}: the backward takes bf16 tensors, not {:?}", t.dtype())
        }
    }
    let guards =
        [tensors[0], tensors[1], tensors[2], tensors[3], tensors[4], lse].map(|t| t.storage_and_layout());
    let storages: Vec<&CudaStorage> = guards.iter().map(|(g, _)| cuda_storage(g)).collect::<Result<_>>()?;
    let layouts: Vec<&Layout> = guards.iter().map(|(_, l)| *l).collect();
    let s = shape(layouts[0], layouts[1], layouts[2], cu)?;
    let device = &storages[0].device;
    let bf = |i: usize| view::<bf16>(NAME, storages[i], layouts[i]);
    let (qv, kv, vv, ov, dov) = (bf(0)?, bf(1)?, bf(2)?, bf(3)?, bf(4)?);
    let lse_view = view::<f32>(NAME, storages[5], layouts[5])?;
    let mut dq = zeros::<bf16>(device, qv.len())?;
    let mut dk = zeros::<bf16>(device, kv.len())?;
    let mut dv = zeros::<bf16>(device, vv.len())?;
    let kernels = kernels_for(device)?;
    let stream = device.cuda_stream();
    let mut exec = Device::new(device, &stream);
    let buffers = BackwardBuffers {
        q: exec.read(&qv),
        k: exec.read(&kv),
        v: exec.read(&vv),
        out: exec.read(&ov),
        d_out: exec.read(&dov),
        lse: exec.read(&lse_view),
        dq: exec.write(&mut dq),
        dk: exec.write(&mut dk),
        dv: exec.write(&mut dv),
    };
    launch::backward(&mut exec, s, buffers, cu, scale, kernels)?;
    drop(exec);
    let wrap = |slice, dims: &[usize]| {
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone()));
        Tensor::from_storage(storage, dims, BackpropOp::none(), false)
    };
    Ok((wrap(dq, q.dims()), wrap(dk, k.dims()), wrap(dv, v.dims())))
}
