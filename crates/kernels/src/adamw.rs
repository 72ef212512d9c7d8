//! One AdamW step over flat fp32 state (master weights, moments, gradient in one layout),
//! in segments that each take weight decay or not. [`update_cpu`] is the reference the
//! trainer runs on the CPU; `kernels/adamw.cu` does the same arithmetic, operation for
//! operation and without fused multiply-adds, so both take bit-identical steps. The
//! kernel updates every segment of a shard in one launch from a table of [`Chunk`]s.

use rayon::prelude::*;

/// The step's scalars, as the kernel takes them (`AdamwScalars` in `kernels/adamw.cu`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalars {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `lr / (1 - beta1^t)`
    pub step_size: f32,
    /// `sqrt(1 - beta2^t)`
    pub bias2_sqrt: f32,
    /// `lr * weight_decay`, applied to decayed segments.
    pub decay: f32,
}

impl Scalars {
    /// The scalars of step `step` (1 for the first) at learning rate `lr`; the bias
    /// corrections are computed in f64, then rounded.
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64, step: u64, lr: f64) -> Self {
        let t = step.min(i32::MAX as u64) as i32;
        Self {
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: eps as f32,
            step_size: (lr / (1.0 - beta1.powi(t))) as f32,
            bias2_sqrt: (1.0 - beta2.powi(t)).sqrt() as f32,
            decay: (lr * weight_decay) as f32,
        }
    }
}

/// A block's piece of the flat state (`AdamwChunk` in `kernels/adamw.cu`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub len: u32,
    /// 1 when the piece's tensor takes weight decay.
    pub decay: u32,
}

/// Cuts segments `(len, decays)`, laid out one after another, into chunks of at most
/// `chunk_len` elements that never straddle two segments.
pub fn plan_chunks(segments: &[(usize, bool)], chunk_len: usize) -> Vec<Chunk> {
    let chunk_len = chunk_len.clamp(1, u32::MAX as usize);
    let mut chunks = Vec::new();
    let mut offset = 0u64;
    for &(len, decays) in segments {
        let mut left = len;
        while left > 0 {
            let take = left.min(chunk_len);
            chunks.push(Chunk { offset, len: take as u32, decay: decays as u32 });
            offset += take as u64;
            left -= take;
        }
    }
    chunks
}

/// Elements one CPU thread updates at a time: large enough that the split costs nothing,
/// small enough that both cores share a small tensor's segment too.
const CPU_CHUNK_LEN: usize = 1 << 16;

/// One step over segments `(len, decays)` laid out one after another in the flat state:
/// [`update_cpu`] on each, its chunks spread over rayon's threads. Each element is updated
/// on its own, so the result does not depend on how the chunks are shared out.
pub fn update_segments_cpu(
    master: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: &[f32],
    segments: &[(usize, bool)],
    s: &Scalars,
) {
    let mut at = 0;
    for &(len, decays) in segments {
        let r = at..at + len;
        master[r.clone()]
            .par_chunks_mut(CPU_CHUNK_LEN)
            .zip(m[r.clone()].par_chunks_mut(CPU_CHUNK_LEN))
            .zip(v[r.clone()].par_chunks_mut(CPU_CHUNK_LEN))
            .zip(grad[r].par_chunks(CPU_CHUNK_LEN))
            .for_each(|(((w, m), v), g)| update_cpu(w, m, v, g, decays, s));
        at += len;
    }
}

/// One step of one segment on the CPU: the reference for the kernel.
pub fn update_cpu(master: &mut [f32], m: &mut [f32], v: &mut [f32], grad: &[f32], decays: bool, s: &Scalars) {
    assert!(
        m.len() == master.len() && v.len() == master.len() && grad.len() == master.len(),
        "AdamW state and gradient of one length"
    );
    let decay = if decays { s.decay } else { 0.0 };
    let (one_minus_b1, one_minus_b2) = (1.0 - s.beta1, 1.0 - s.beta2);
    for (((w, m), v), &g) in master.iter_mut().zip(m).zip(v).zip(grad) {
        *m = s.beta1 * *m + one_minus_b1 * g;
        *v = s.beta2 * *v + one_minus_b2 * g * g;
        *w -= decay * *w;
        *w -= s.step_size * *m / (v.sqrt() / s.bias2_sqrt + s.eps);
    }
}
