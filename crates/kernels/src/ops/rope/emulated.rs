//! RoPE under the emulation, over host slices, through the same launch as the device.

use candle_core::{bail, Result};

use super::launch::{self, Buffers};
use crate::emulated::{check, Element, Host};
use crate::launch::Buffer;

/// RoPE of `x` (`[tokens, heads, head_dim]`) from f32 `cos`/`sin` tables
/// (`[tokens, head_dim]`); `backward` applies the transposed rotation (to a gradient).
pub fn rope<T: Element>(
    backward: bool,
    x: &[T],
    cos: &[f32],
    sin: &[f32],
    y: &mut [T],
    heads: usize,
    head_dim: usize,
) -> Result<()> {
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        bail!("head_dim {head_dim} must be even")
    }
    let tokens = cos.len() / head_dim;
    check("cos", cos.len(), tokens * head_dim)?;
    check("sin", sin.len(), tokens * head_dim)?;
    check("x", x.len(), tokens * heads * head_dim)?;
    check("y", y.len(), x.len())?;
    let buffers = Buffers {
        x: Buffer::host(x),
        cos: Buffer::host(cos),
        sin: Buffer::host(sin),
        y: Buffer::host_mut(y),
    };
    launch::rotate(&mut Host::default(), T::ELEMENT, backward, buffers, [tokens, heads, head_dim])
}
