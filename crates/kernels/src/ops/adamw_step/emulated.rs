//! The AdamW step under the emulation, over host slices, through the same launch as the
//! device.

use candle_core::Result;

use super::launch::{self, Buffers};
use crate::adamw::Scalars;
use crate::emulated::{check, Bf16, Host};
use crate::launch::Buffer;

/// The state AdamW updates: master weights and moments, with the optional bf16 copy.
pub struct AdamwState<'a> {
    pub master: &'a mut [f32],
    pub m: &'a mut [f32],
    pub v: &'a mut [f32],
    pub compute: Option<&'a mut [Bf16]>,
}

/// One multi-tensor AdamW step over `segments` `(length, decayed)`, a block per chunk of
/// at most `chunk_len` elements (the op uses [`super::CHUNK_LEN`]).
pub fn adamw_step(
    state: AdamwState<'_>,
    grad: &[f32],
    segments: &[(usize, bool)],
    chunk_len: usize,
    scalars: &Scalars,
) -> Result<()> {
    let n = state.master.len();
    check("segments", segments.iter().map(|s| s.0).sum(), n)?;
    check("m", state.m.len(), n)?;
    check("v", state.v.len(), n)?;
    check("grad", grad.len(), n)?;
    if let Some(compute) = &state.compute {
        check("compute", compute.len(), n)?;
    }
    let buffers = Buffers {
        master: Buffer::host_mut(state.master),
        m: Buffer::host_mut(state.m),
        v: Buffer::host_mut(state.v),
        grad: Buffer::host(grad),
        compute: state.compute.map(Buffer::host_mut),
    };
    launch::step(&mut Host::default(), buffers, segments, chunk_len, *scalars)
}
