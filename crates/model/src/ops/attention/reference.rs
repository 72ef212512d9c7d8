//! The reference attention: each document's full score matrix, from differentiable
//! candle primitives. Its memory grows with the square of the longest document, so it
//! serves the checks and the devices that have no kernel yet.

use candle_core::{DType, Device, Tensor};

use super::Segments;
use crate::error::Result;
use crate::ops::softmax_last_dim;

/// Attention as [`super::attention`] defines it; one segment's `[queries x keys]` scores
/// per head at a time, never a `[tokens x tokens]` mask.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, segments: &Segments, scale: f64) -> Result<Tensor> {
    let (_, q_heads, head_dim) = q.dims3()?;
    let kv_heads = k.dim(1)?;
    let group = q_heads / kv_heads;
    let mut outputs = Vec::new();
    for (queries, keys) in segments.iter().filter(|(q, _)| !q.is_empty()) {
        let (rows, len) = (queries.len(), keys.len());
        // [kv_heads, group * rows, head_dim]: the queries that share a key/value head, stacked.
        let q_seg = q.narrow(0, queries.start, rows)?.transpose(0, 1)?.contiguous()?.reshape((
            kv_heads,
            group * rows,
            head_dim,
        ))?;
        let k_seg = k.narrow(0, keys.start, len)?.transpose(0, 1)?.contiguous()?;
        let v_seg = v.narrow(0, keys.start, len)?.transpose(0, 1)?.contiguous()?;
        // Scores in the input dtype, softmax in f32, probabilities back in the input dtype:
        // the precision transformers' eager attention uses.
        let scores = (q_seg.matmul(&k_seg.t()?)? * scale)?
            .to_dtype(DType::F32)?
            .reshape((kv_heads, group, rows, len))?
            .broadcast_add(&causal_mask(rows, len, q.device())?)?;
        let probs = softmax_last_dim(&scores)?.to_dtype(q.dtype())?.reshape((kv_heads, group * rows, len))?;
        let out = probs.matmul(&v_seg)?.reshape((q_heads, rows, head_dim))?.transpose(0, 1)?;
        outputs.push(out);
    }
    Ok(Tensor::cat(&outputs, 0)?)
}

/// `[rows, keys]` additive mask, aligned at the bottom right: 0 where query `i` may see key
/// `j` (`j <= i + keys - rows`), -inf elsewhere.
fn causal_mask(rows: usize, keys: usize, device: &Device) -> Result<Tensor> {
    let shift = keys - rows;
    let mask: Vec<f32> = (0..rows)
        .flat_map(|i| (0..keys).map(move |j| if j <= i + shift { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Ok(Tensor::from_vec(mask, (rows, keys), device)?)
}
