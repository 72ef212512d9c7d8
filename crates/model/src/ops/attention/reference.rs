//! The reference attention: each document's full score matrix, from differentiable
//! candle primitives. Its memory grows with the square of the longest document, so it
//! serves the checks and the devices that have no kernel yet.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::ops::softmax_last_dim;

/// Attention as [`super::varlen_causal_attention`] defines it; one document's
/// `[L x L]` scores per head at a time, never a `[tokens x tokens]` mask.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, cu_seqlens: &[u32], scale: f64) -> Result<Tensor> {
    let (_, q_heads, head_dim) = q.dims3()?;
    let kv_heads = k.dim(1)?;
    let group = q_heads / kv_heads;
    let mut outputs = Vec::with_capacity(cu_seqlens.len().saturating_sub(1));
    for bounds in cu_seqlens.windows(2) {
        let (start, len) = (bounds[0] as usize, (bounds[1] - bounds[0]) as usize);
        // [kv_heads, group * len, head_dim]: the queries that share a key/value head, stacked.
        let q_doc = q.narrow(0, start, len)?.transpose(0, 1)?.contiguous()?.reshape((
            kv_heads,
            group * len,
            head_dim,
        ))?;
        let k_doc = k.narrow(0, start, len)?.transpose(0, 1)?.contiguous()?;
        let v_doc = v.narrow(0, start, len)?.transpose(0, 1)?.contiguous()?;
        // Scores in the input dtype, softmax in f32, probabilities back in the input dtype:
        // the precision transformers' eager attention uses.
        let scores = (q_doc.matmul(&k_doc.t()?)? * scale)?
            .to_dtype(DType::F32)?
            .reshape((kv_heads, group, len, len))?
            .broadcast_add(&causal_mask(len, q.device())?)?;
        let probs = softmax_last_dim(&scores)?.to_dtype(q.dtype())?.reshape((kv_heads, group * len, len))?;
        let out = probs.matmul(&v_doc)?.reshape((q_heads, len, head_dim))?.transpose(0, 1)?;
        outputs.push(out);
    }
    Ok(Tensor::cat(&outputs, 0)?)
}

/// `[len, len]` additive mask: 0 on and below the diagonal, -inf above.
fn causal_mask(len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> =
        (0..len).flat_map(|i| (0..len).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY })).collect();
    Ok(Tensor::from_vec(mask, (len, len), device)?)
}
