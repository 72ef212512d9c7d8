//! Flash attention under the emulation, over host slices of bf16 bits laid out as the
//! trainer's packed rows (`[tokens, heads, head_dim]`), through the same launches as the
//! device. Padding rows past the last segment are zeroed here, as the device path's zeroed
//! outputs leave them.

use candle_core::{bail, Result};

use super::launch::{self, BackwardBuffers, ForwardBuffers, Kernels};
use crate::attention::{AttentionShape, Segments};
use crate::emulated::{check, Bf16, Host};
use crate::launch::Buffer;

fn check_shape(s: &AttentionShape, cu: Segments<'_>, buffers: &[(&str, usize, bool)]) -> Result<()> {
    if let Err(e) = s.check(cu) {
        bail!("{e}")
    }
    for &(what, len, kv) in buffers {
        check(what, len, s.elements(kv))?;
    }
    Ok(())
}

/// The forward by `kernels`: `out` (`[q_tokens, q_heads, head_dim]`) and `lse`
/// (`[q_heads, q_tokens]`, natural log). Padding rows get zeros in both.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_fwd(
    kernels: Kernels,
    s: AttentionShape,
    q: &[Bf16],
    k: &[Bf16],
    v: &[Bf16],
    cu: Segments<'_>,
    scale: f32,
    out: &mut [Bf16],
    lse: &mut [f32],
) -> Result<()> {
    let buffers =
        [("q", q.len(), false), ("k", k.len(), true), ("v", v.len(), true), ("out", out.len(), false)];
    check_shape(&s, cu, &buffers)?;
    check("lse", lse.len(), s.q_heads * s.q_tokens)?;
    let (pad, _) = cu.padding_start();
    out[pad * s.q_heads * s.head_dim..].fill(0);
    for h in 0..s.q_heads {
        lse[h * s.q_tokens + pad..(h + 1) * s.q_tokens].fill(0.0);
    }
    let buffers = ForwardBuffers {
        q: Buffer::host(q),
        k: Buffer::host(k),
        v: Buffer::host(v),
        out: Buffer::host_mut(out),
        lse: Buffer::host_mut(lse),
    };
    launch::forward(&mut Host::default(), s, buffers, cu, scale, kernels)
}

/// The gradients of q, k and v (dK and dV summed over each group's query heads).
pub struct AttentionGrads<'a> {
    pub dq: &'a mut [Bf16],
    pub dk: &'a mut [Bf16],
    pub dv: &'a mut [Bf16],
}

/// The backward by `kernels` from the output's gradient and the forward's `out` and
/// `lse`. Padding rows get zeros.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_bwd(
    kernels: Kernels,
    s: AttentionShape,
    q: &[Bf16],
    k: &[Bf16],
    v: &[Bf16],
    out: &[Bf16],
    d_out: &[Bf16],
    lse: &[f32],
    cu: Segments<'_>,
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
    check_shape(&s, cu, &buffers)?;
    check("lse", lse.len(), s.q_heads * s.q_tokens)?;
    let (q_pad, k_pad) = cu.padding_start();
    // Without a single query no kernel runs, and no key has a gradient.
    let k_pad = if q_pad == 0 { 0 } else { k_pad };
    grads.dq[q_pad * s.q_heads * s.head_dim..].fill(0);
    grads.dk[k_pad * s.kv_heads * s.head_dim..].fill(0);
    grads.dv[k_pad * s.kv_heads * s.head_dim..].fill(0);
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
    launch::backward(&mut Host::default(), s, buffers, cu, scale, kernels)
}
