//! The gated activation of Qwen2.5's MLP, `silu(gate) * up`, with `silu(gate)` rounded to
//! the input's dtype before the product as transformers does. Kernels: `kernels/swiglu.cu`.
//! The backward is one op whose output packs `d_gate` then `d_up`.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{by_dtype, cpu_slice, same_dtype, CpuFloat, CPU_GRAIN};

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "emulation")]
pub(crate) mod emulated;
#[cfg(any(feature = "cuda", feature = "emulation"))]
mod launch;

const NAME: &str = "swiglu";

/// `silu(gate) * up`, elementwise over tensors of one shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    same_shape(gate, up, "up")?;
    gate.contiguous()?.apply_op2(&up.contiguous()?, Swiglu)
}

fn same_shape(gate: &Tensor, other: &Tensor, what: &str) -> Result<()> {
    if gate.dims() != other.dims() {
        bail!("{NAME}: gate {:?} and {what} {:?} differ in shape", gate.dims(), other.dims())
    }
    Ok(())
}

/// The gradients `(d_gate, d_up)` of [`swiglu`] for the output's gradient `dy`.
pub fn swiglu_backward(gate: &Tensor, up: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    same_shape(gate, up, "up")?;
    same_shape(gate, dy, "dy")?;
    let gate = gate.contiguous()?;
    let packed = gate.apply_op3_no_bwd(&up.contiguous()?, &dy.contiguous()?, &SwigluBackward)?;
    let n = gate.elem_count();
    Ok((packed.narrow(0, 0, n)?.reshape(gate.shape())?, packed.narrow(0, n, n)?.reshape(gate.shape())?))
}

struct Swiglu;
struct SwigluBackward;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn forward<T: CpuFloat>(gate: &[T], up: &[T]) -> Vec<T> {
    let mut y = vec![T::from_f32(0.0); gate.len()];
    y.par_chunks_mut(CPU_GRAIN).zip(gate.par_chunks(CPU_GRAIN).zip(up.par_chunks(CPU_GRAIN))).for_each(
        |(y, (gate, up))| {
            for ((y, g), u) in y.iter_mut().zip(gate).zip(up) {
                let g = g.to_f32();
                *y = T::from_f32(T::round(g * sigmoid(g)) * u.to_f32());
            }
        },
    );
    y
}

/// `d_gate` then `d_up`.
fn backward<T: CpuFloat>(gate: &[T], up: &[T], dy: &[T]) -> Vec<T> {
    let n = gate.len();
    let mut packed = vec![T::from_f32(0.0); 2 * n];
    let (d_gate, d_up) = packed.split_at_mut(n);
    d_gate
        .par_chunks_mut(CPU_GRAIN)
        .zip(d_up.par_chunks_mut(CPU_GRAIN))
        .zip(gate.par_chunks(CPU_GRAIN).zip(up.par_chunks(CPU_GRAIN)).zip(dy.par_chunks(CPU_GRAIN)))
        .for_each(|((d_gate, d_up), ((gate, up), dy))| {
            for i in 0..gate.len() {
                let (g, u, d) = (gate[i].to_f32(), up[i].to_f32(), dy[i].to_f32());
                let s = sigmoid(g);
                d_up[i] = T::from_f32(d * g * s);
                d_gate[i] = T::from_f32(d * u * s * (1.0 + g * (1.0 - s)));
            }
        });
    packed
}

impl CustomOp2 for Swiglu {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: CpuFloat>(
            gs: &CpuStorage,
            gl: &Layout,
            us: &CpuStorage,
            ul: &Layout,
        ) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(forward(cpu_slice::<T>(NAME, gs, gl)?, cpu_slice::<T>(NAME, us, ul)?)))
        }
        let dtype = same_dtype(NAME, &[gs.dtype(), us.dtype()])?;
        Ok((by_dtype!(NAME, dtype, run(gs, gl, us, ul))?, gl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        us: &candle_core::CudaStorage,
        ul: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dtype = same_dtype(NAME, &[gs.dtype(), us.dtype()])?;
        let y =
            crate::cuda::by_cuda_dtype!(NAME, dtype, cuda::launch(false, [(gs, gl), (us, ul), (us, ul)]))?;
        Ok((y, gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (d_gate, d_up) = swiglu_backward(gate, up, dy)?;
        Ok((Some(d_gate), Some(d_up)))
    }
}

impl CustomOp3 for SwigluBackward {
    fn name(&self) -> &'static str {
        "swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: CpuFloat>(args: [(&CpuStorage, &Layout); 3]) -> Result<CpuStorage> {
            let [gate, up, dy] = args.map(|(s, l)| cpu_slice::<T>(NAME, s, l));
            Ok(T::to_cpu_storage_owned(backward(gate?, up?, dy?)))
        }
        let dtype = same_dtype(NAME, &[gs.dtype(), us.dtype(), ds.dtype()])?;
        let packed = by_dtype!(NAME, dtype, run([(gs, gl), (us, ul), (ds, dl)]))?;
        Ok((packed, Shape::from(2 * gl.shape().elem_count())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        us: &candle_core::CudaStorage,
        ul: &Layout,
        ds: &candle_core::CudaStorage,
        dl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dtype = same_dtype(NAME, &[gs.dtype(), us.dtype(), ds.dtype()])?;
        let packed =
            crate::cuda::by_cuda_dtype!(NAME, dtype, cuda::launch(true, [(gs, gl), (us, ul), (ds, dl)]))?;
        Ok((packed, Shape::from(2 * gl.shape().elem_count())))
    }
}
