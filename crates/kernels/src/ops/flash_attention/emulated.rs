//! Flash attention under the emulation, over host slices of bf16 bits laid out as the
//! trainer's packed rows (`[tokens, heads, head_dim]`), through the same launches as the
//! device. Padding rows past the last document are zeroed here, as the device path's
//! zeroed outputs leave them.

use candle_core::{bail, Result};

use super::launch::{self, BackwardBuffers, ForwardBuffers};
use crate::attention::AttentionShape;
use crate::emulated::{check, Bf16, Host};
use crate::launch::Buffer;

fn check_shape(s: &AttentionShape, cu_seqlens: &[u32], buffers: &[(&str, usize, bool)]) -> Result<()> {
    if let Err(e) = s.check(cu_seqlens) {
        bail!("{e}")
    }
    for &(what, len, kv) in buffers {
        check(what, len, s.elements(kv))?;
    }
    Ok(())
}

/// The forward: `out` (`[tokens, q_heads, head_dim]`) and `lse` (`[q_heads, tokens]`,
/// natural log). Padding rows get zeros in both.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_fwd(
    s: AttentionShape,
    q: &[Bf16],
    k: &[Bf16],
    v: &[Bf16],
    cu_seqlens: &[u32],
    scale: f32,
    out: &mut [Bf16],
    lse: &mut [f32],
) -> Result<()> {
    let buffers =
        [("q", q.len(), false), ("k", k.len(), true), ("v", v.len(), true), ("out", out.len(), false)];
    check_shape(&s, cu_seqlens, &buffers)?;
    check("lse", lse.len(), s.q_heads * s.tokens)?;
    let pad = s.padding_start(cu_seqlens);
    out[pad * s.q_heads * s.head_dim..].fill(0);
    for h in 0..s.q_heads {
        lse[h * s.tokens + pad..(h + 1) * s.tokens].fill(0.0);
    }
    let buffers = ForwardBuffers {
        q: Buffer::host(q),
        k: Buffer::host(k),
        v: Buffer::host(v),
        out: Buffer::host_mut(out),
        lse: Buffer::host_mut(lse),
    };
    launch::forward(&mut Host::default(), s, buffers, cu_seqlens, scale)
}

/// The gradients of q, k and v (dK and dV summed over each group's query heads).
pub struct AttentionGrads<'a> {
    pub dq: &'a mut [Bf16],
    pub dk: &'a mut [Bf16],
    pub dv: &'a mut [Bf16],
}

/// The backward from the output's gradient and the forward's `out` and `lse`. Padding
/// rows get zeros.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_bwd(
    s: AttentionShape,
    q: &[Bf16],
    k: &[Bf16],
    v: &[Bf16],
    out: &[Bf16],
    d_out: &[Bf16],
    lse: &[f32],
    cu_seqlens: &[u32],
    scale: f32,
    grads: AttentionGrads<'_>,
) -> Result<()> {
    let buffers = [
        ("q", q.len(), false),
        ("k", k.len(), true),
        ("v", v.len(), true),
        ("out", out.len(), false),
        ("d_out", d_out.len(), false),
        ("dq", grads.dq.len(), false),
        ("dk", grads.dk.len(), true),
        ("dv", grads.dv.len(), true),
    ];
    check_shape(&s, cu_seqlens, &buffers)?;
    check("lse", lse.len(), s.q_heads * s.tokens)?;
    let pad = s.padding_start(cu_seqlens);
    grads.dq[pad * s.q_heads * s.head_dim..].fill(0);
    grads.dk[pad * s.kv_heads * s.head_dim..].fill(0);
    grads.dv[pad * s.kv_heads * s.head_dim..].fill(0);
    let buffers = BackwardBuffers {
        q: Buffer::host(q),
        k: Buffer::host(k),
        v: Buffer::host(v),
        out: Buffer::host(out),
        d_out: Buffer::host(d_out),
        lse: Buffer::host(lse),
        dq: Buffer::host_mut(grads.dq),
        dk: Buffer::host_mut(grads.dk),
        dv: Buffer::host_mut(grads.dv),
    };
    launch::backward(&mut Host::default(), s, buffers, cu_seqlens, scale)
}
