//! One AdamW step in place on a shard's state tensor, `[3, n]` f32 holding the master
//! weights, the first and the second moments, so that FSDP's optimizer state lives on the
//! training device: the CPU body runs [`update_segments_cpu`], the CUDA body
//! launches `kernels/adamw.cu` once over the whole shard.

use candle_core::{bail, CpuStorage, DType, InplaceOp2, Layout, Result, Tensor};

use crate::adamw::{update_segments_cpu, Scalars};

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "emulation")]
pub(crate) mod emulated;
#[cfg(any(feature = "cuda", feature = "emulation"))]
mod launch;

/// Elements of one block's chunk in the CUDA launch.
pub const CHUNK_LEN: usize = 1 << 14;

/// Steps `state` (`[3, n]` f32, contiguous) with `grad` (`[n]` f32, already scaled), in
/// `segments` of `(length, decayed)` that cover the `n` elements in order.
pub fn adamw_step(state: &Tensor, grad: &Tensor, segments: &[(usize, bool)], scalars: Scalars) -> Result<()> {
    let n = grad.elem_count();
    if state.dims() != [3, n] || state.dtype() != DType::F32 || grad.dtype() != DType::F32 {
        bail!(
            "adamw: state {:?} {:?} and gradient {:?} {:?} (expected [3, n] and [n], f32)",
            state.dims(),
            state.dtype(),
            grad.dims(),
            grad.dtype()
        )
    }
    if !state.is_contiguous() {
        bail!("adamw: the state must be contiguous (it is updated in place)")
    }
    let covered: usize = segments.iter().map(|s| s.0).sum();
    if covered != n {
        bail!("adamw: segments cover {covered} of {n} elements")
    }
    state.inplace_op2(&grad.contiguous()?, &AdamwStep { segments, scalars })
}

struct AdamwStep<'a> {
    segments: &'a [(usize, bool)],
    scalars: Scalars,
}

impl InplaceOp2 for AdamwStep<'_> {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let n = l2.shape().elem_count();
        let (CpuStorage::F32(state), CpuStorage::F32(grad)) = (s1, s2) else {
            bail!("adamw: f32 state and gradient")
        };
        let state = &mut state[l1.start_offset()..l1.start_offset() + 3 * n];
        let grad = &grad[l2.start_offset()..l2.start_offset() + n];
        let (master, moments) = state.split_at_mut(n);
        let (m, v) = moments.split_at_mut(n);
        update_segments_cpu(master, m, v, grad, self.segments, &self.scalars);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        cuda::step((s1, l1), (s2, l2), self.segments, self.scalars)
    }
}
