//! Rotary position embedding of q or k (`[tokens, heads, head_dim]`) from the packed row's
//! f32 cos/sin tables (`[tokens, head_dim]`, built from per-document positions), in
//! transformers' rounding order: the tables rounded to the input's dtype, each product
//! rounded, then the sum. Kernels: `kernels/rope.cu`. The backward rotates the other way.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{by_dtype, cpu_slice, CpuFloat};

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "emulation")]
pub(crate) mod emulated;
#[cfg(any(feature = "cuda", feature = "emulation"))]
mod launch;

const NAME: &str = "rope";

/// `x * cos + rotate_half(x) * sin`, where `rotate_half([a, b]) = [-b, a]` over the two
/// halves of the head dimension.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check(x, cos, sin)?;
    x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope { backward: false })
}

/// The gradient of [`rope`]'s input for the output's gradient `dy`: the rotation by the
/// opposite angles.
pub fn rope_backward(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check(dy, cos, sin)?;
    dy.contiguous()?.apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &Rope { backward: true })
}

/// `x` is `[tokens, heads, head_dim]` with an even head_dim, the tables f32
/// `[tokens, head_dim]`.
fn check(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<()> {
    let (tokens, _heads, head_dim) = x.dims3()?;
    for (what, table) in [("cos", cos), ("sin", sin)] {
        if table.dims() != [tokens, head_dim] || table.dtype() != DType::F32 {
            bail!(
                "{NAME}: {what} table {:?} {:?} for x {:?}; it must be f32 [tokens, head_dim]",
                table.dims(),
                table.dtype(),
                x.dims()
            )
        }
    }
    if !head_dim.is_multiple_of(2) {
        bail!("{NAME}: head_dim {head_dim} is odd")
    }
    Ok(())
}

struct Rope {
    /// The transposed rotation, applied to the output's gradient.
    backward: bool,
}

impl Rope {
    fn apply<T: CpuFloat>(&self, x: &[T], cos: &[f32], sin: &[f32], head_dim: usize) -> Vec<T> {
        let half = head_dim / 2;
        let per_token = x.len() / (cos.len() / head_dim).max(1);
        let mut y = vec![T::from_f32(0.0); x.len()];
        if per_token == 0 {
            return y;
        }
        y.par_chunks_mut(per_token).zip(x.par_chunks(per_token)).enumerate().for_each(|(token, (y, x))| {
            let c = &cos[token * head_dim..(token + 1) * head_dim];
            let s = &sin[token * head_dim..(token + 1) * head_dim];
            for (y, x) in y.chunks_mut(head_dim).zip(x.chunks(head_dim)) {
                for i in 0..half {
                    let (c1, c2) = (T::round(c[i]), T::round(c[i + half]));
                    let (s1, s2) = (T::round(s[i]), T::round(s[i + half]));
                    let (a, b) = (x[i].to_f32(), x[i + half].to_f32());
                    if self.backward {
                        y[i] = T::from_f32(a * c1 + b * s2);
                        y[i + half] = T::from_f32(b * c2 - a * s1);
                    } else {
                        y[i] = T::from_f32(T::round(a * c1) + T::round(-b * s1));
                        y[i + half] = T::from_f32(T::round(b * c2) + T::round(a * s2));
                    }
                }
            }
        });
        y
    }
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        if self.backward {
            "rope-backward"
        } else {
            NAME
        }
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        fn run<T: CpuFloat>(
            op: &Rope,
            x: (&CpuStorage, &Layout),
            cos: &[f32],
            sin: &[f32],
            head_dim: usize,
        ) -> Result<CpuStorage> {
            Ok(T::to_cpu_storage_owned(op.apply(cpu_slice::<T>(NAME, x.0, x.1)?, cos, sin, head_dim)))
        }
        let head_dim = *xl.dims().last().unwrap_or(&0);
        let (cos, sin) = (cpu_slice::<f32>(NAME, cs, cl)?, cpu_slice::<f32>(NAME, ss, sl)?);
        let y = by_dtype!(NAME, xs.dtype(), run(self, (xs, xl), cos, sin, head_dim))?;
        Ok((y, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        cs: &candle_core::CudaStorage,
        cl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let y = crate::cuda::by_cuda_dtype!(
            NAME,
            xs.dtype(),
            cuda::launch(self.backward, (xs, xl), (cs, cl), (ss, sl))
        )?;
        Ok((y, xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = dy.contiguous()?.apply_op3_no_bwd(cos, sin, &Rope { backward: !self.backward })?;
        Ok((Some(dx), None, None))
    }
}
