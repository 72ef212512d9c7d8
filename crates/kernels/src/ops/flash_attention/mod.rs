//! Flash attention as a candle op for bf16 tensors on a GPU (`kernels/flash_attention.cu`):
//! packed segments of queries and of keys (`cu_seqlens_q`, `cu_seqlens_k`), causal with
//! flash-attn's bottom-right alignment, grouped-query heads. The forward keeps
//! the log-sum-exp of every query row for the backward, which recomputes the probabilities
//! from it. On the CPU the model uses its own tiled attention (`davinci-model`), so this
//! op's CPU body only says so.

use crate::attention::{SavedLse, Segments};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "emulation")]
pub(crate) mod emulated;
#[cfg(any(feature = "cuda", feature = "emulation"))]
mod hopper;
#[cfg(any(feature = "cuda", feature = "emulation"))]
mod launch;
#[cfg(any(feature = "cuda", feature = "emulation"))]
pub use launch::Kernels;

const NAME: &str = "flash-attention";

/// Causal attention within each segment: `q` `[q_tokens, q_heads, D]`, `k` and `v`
/// `[k_tokens, kv_heads, D]` (bf16, on a CUDA device, D 64 or 128). Segment i is the query
/// rows `cu_seqlens_q[i]..cu_seqlens_q[i + 1]` against the key rows
/// `cu_seqlens_k[i]..cu_seqlens_k[i + 1]`, at least as many keys as queries; its mask is
/// aligned at the bottom right, as `flash_attn_varlen_func(.., causal=True)` aligns it, so
/// that the query at offset t sees the keys at offsets `0..=t + (k_len - q_len)`. The
/// same boundaries on both sides give plain causal attention over packed documents; a
/// longer key side lets a chunk of a document's queries (context parallelism) see the keys
/// of the whole prefix. Query rows past the last segment are padding and get zeros, as do
/// the gradients of padding rows and of keys no query sees.
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_seqlens_q: &[u32],
    cu_seqlens_k: &[u32],
    scale: f64,
) -> Result<Tensor> {
    let op = FlashAttention {
        cu_q: cu_seqlens_q.to_vec(),
        cu_k: cu_seqlens_k.to_vec(),
        scale: scale as f32,
        lse: SavedLse::default(),
    };
    aligned(q)?.apply_op3(&aligned(k)?, &aligned(v)?, op)
}

/// `t` contiguous and starting on a 16-byte boundary, as the kernels' 16-byte copies need
/// (a view into a larger tensor may start anywhere: it is copied then).
fn aligned(t: &Tensor) -> Result<Tensor> {
    let t = t.contiguous()?;
    if (t.layout().start_offset() * t.dtype().size_in_bytes()).is_multiple_of(16) {
        Ok(t)
    } else {
        t.copy()
    }
}

struct FlashAttention {
    cu_q: Vec<u32>,
    cu_k: Vec<u32>,
    scale: f32,
    /// `[q_heads, q_tokens]` f32, from the forward, for the backward.
    lse: SavedLse,
}

impl FlashAttention {
    fn segments(&self) -> Segments<'_> {
        Segments { q: &self.cu_q, k: &self.cu_k }
    }
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("{NAME} runs on CUDA bf16 tensors; on the CPU the model's tiled attention is the path")
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        qs: &candle_core::CudaStorage,
        ql: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
        vs: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (out, lse) = cuda::forward(self.segments(), self.scale, (qs, ql), (ks, kl), (vs, vl))?;
        self.lse.store(lse)?;
        Ok((out, ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        d_out: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = self.lse.get(NAME)?;
        #[cfg(feature = "cuda")]
        {
            let (dq, dk, dv) =
                cuda::backward(self.segments(), self.scale, [q, k, v, out, &aligned(d_out)?], &lse)?;
            Ok((Some(dq), Some(dk), Some(dv)))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (q, k, v, out, d_out, lse, self.segments(), self.scale);
            bail!("{NAME}: built without the cuda feature")
        }
    }
}
