//! The flash-attention kernels under the emulation: bf16 q, k, v in, as the trainer's
//! packed rows lay them out (`[tokens, heads, head_dim]`).

use super::Bf16;
use crate::attention::{check_shapes, key_tiles, query_tiles};

mod ffi {
    use std::ffi::c_void;
    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn emu_flash_attention_fwd(
            q: *const c_void,
            k: *const c_void,
            v: *const c_void,
            out: *mut c_void,
            lse: *mut f32,
            tiles: *const c_void,
            tile_count: i32,
            tokens: i32,
            q_heads: i32,
            kv_heads: i32,
            head_dim: i32,
            scale: f32,
        );
        #[allow(clippy::too_many_arguments)]
        pub fn emu_flash_attention_bwd(
            q: *const c_void,
            k: *const c_void,
            v: *const c_void,
            out: *const c_void,
            d_out: *const c_void,
            lse: *const f32,
            dq: *mut c_void,
            dk: *mut c_void,
            dv: *mut c_void,
            query_tiles: *const c_void,
            query_tile_count: i32,
            key_tiles: *const c_void,
            key_tile_count: i32,
            tokens: i32,
            q_heads: i32,
            kv_heads: i32,
            head_dim: i32,
            scale: f32,
        );
    }
}

/// The shape of one call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub tokens: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    fn check(&self, cu_seqlens: &[u32], buffers: &[(&str, usize, usize)]) {
        if let Err(e) = check_shapes(self.tokens, self.q_heads, self.kv_heads, self.head_dim, cu_seqlens) {
            panic!("{e}");
        }
        for &(what, len, heads) in buffers {
            assert_eq!(len, self.tokens * heads * self.head_dim, "{what}: wrong length");
        }
    }

    /// Rows past the last document: padding, which the kernels never visit.
    fn padding(&self, cu_seqlens: &[u32]) -> std::ops::Range<usize> {
        cu_seqlens.last().map_or(0, |&e| e as usize)..self.tokens
    }
}

/// The forward: `out` (`[tokens, q_heads, head_dim]`) and `lse` (`[q_heads, tokens]`,
/// natural log). Padding rows get zeros in both.
#[allow(clippy::too_many_arguments)]
pub fn flash_attention_fwd(
    shape: AttentionShape,
    q: &[Bf16],
    k: &[Bf16],
    v: &[Bf16],
    cu_seqlens: &[u32],
    scale: f32,
    out: &mut [Bf16],
    lse: &mut [f32],
) {
    let s = shape;
    s.check(
        cu_seqlens,
        &[
            ("q", q.len(), s.q_heads),
            ("k", k.len(), s.kv_heads),
            ("v", v.len(), s.kv_heads),
            ("out", out.len(), s.q_heads),
        ],
    );
    assert_eq!(lse.len(), s.q_heads * s.tokens, "lse: wrong length");
    let tiles = query_tiles(cu_seqlens);
    if !tiles.is_empty() {
        // SAFETY: the buffers' lengths were checked against the shape, and every tile lies
        // inside the row.
        unsafe {
            ffi::emu_flash_attention_fwd(
                q.as_ptr().cast(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                lse.as_mut_ptr(),
                tiles.as_ptr().cast(),
                tiles.len() as i32,
                s.tokens as i32,
                s.q_heads as i32,
                s.kv_heads as i32,
                s.head_dim as i32,
                scale,
            )
        }
    }
    let pad = s.padding(cu_seqlens);
    out[pad.start * s.q_heads * s.head_dim..].fill(0);
    for h in 0..s.q_heads {
        lse[h * s.tokens + pad.start..(h + 1) * s.tokens].fill(0.0);
    }
}

/// The gradients of q, k and v (dK and dV summed over each group's query heads) from the
/// output's gradient and the forward's `out` and `lse`. Padding rows get zeros.
pub struct AttentionGrads<'a> {
    pub dq: &'a mut [Bf16],
    pub dk: &'a mut [Bf16],
    pub dv: &'a mut [Bf16],
}

#[allow(clippy::too_many_arguments)]
pub fn flash_attention_bwd(
    shape: AttentionShape,
    q: &[Bf16],
    k: &[Bf16],
    v: &[Bf16],
    out: &[Bf16],
    d_out: &[Bf16],
    lse: &[f32],
    cu_seqlens: &[u32],
    scale: f32,
    grads: AttentionGrads<'_>,
) {
    let s = shape;
    s.check(
        cu_seqlens,
        &[
            ("q", q.len(), s.q_heads),
            ("k", k.len(), s.kv_heads),
            ("v", v.len(), s.kv_heads),
            ("out", out.len(), s.q_heads),
            ("d_out", d_out.len(), s.q_heads),
            ("dq", grads.dq.len(), s.q_heads),
            ("dk", grads.dk.len(), s.kv_heads),
            ("dv", grads.dv.len(), s.kv_heads),
        ],
    );
    assert_eq!(lse.len(), s.q_heads * s.tokens, "lse: wrong length");
    let (queries, keys) = (query_tiles(cu_seqlens), key_tiles(cu_seqlens));
    if !queries.is_empty() {
        // SAFETY: the buffers' lengths were checked against the shape, and every tile lies
        // inside the row.
        unsafe {
            ffi::emu_flash_attention_bwd(
                q.as_ptr().cast(),
                k.as_ptr().cast(),
                v.as_ptr().cast(),
                out.as_ptr().cast(),
                d_out.as_ptr().cast(),
                lse.as_ptr(),
                grads.dq.as_mut_ptr().cast(),
                grads.dk.as_mut_ptr().cast(),
                grads.dv.as_mut_ptr().cast(),
                queries.as_ptr().cast(),
                queries.len() as i32,
                keys.as_ptr().cast(),
                keys.len() as i32,
                s.tokens as i32,
                s.q_heads as i32,
                s.kv_heads as i32,
                s.head_dim as i32,
                scale,
            )
        }
    }
    let pad = s.padding(cu_seqlens).start;
    grads.dq[pad * s.q_heads * s.head_dim..].fill(0);
    grads.dk[pad * s.kv_heads * s.head_dim..].fill(0);
    grads.dv[pad * s.kv_heads * s.head_dim..].fill(0);
}
