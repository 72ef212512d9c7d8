//! SwiGLU under the emulation, over host slices, through the same launches as the device.

use candle_core::Result;

use super::launch;
use crate::emulated::{check, Element, Host};
use crate::launch::Buffer;

/// `y = silu(gate) * up`.
pub fn swiglu_fwd<T: Element>(gate: &[T], up: &[T], y: &mut [T]) -> Result<()> {
    check("up", up.len(), gate.len())?;
    check("y", y.len(), gate.len())?;
    let buffers = [Buffer::host(gate), Buffer::host(up), Buffer::host_mut(y)];
    launch::forward(&mut Host::default(), T::ELEMENT, buffers, gate.len())
}

/// The gradients of `gate` and `up`.
pub fn swiglu_bwd<T: Element>(
    gate: &[T],
    up: &[T],
    dy: &[T],
    d_gate: &mut [T],
    d_up: &mut [T],
) -> Result<()> {
    for (what, len) in [("up", up.len()), ("dy", dy.len()), ("d_gate", d_gate.len()), ("d_up", d_up.len())] {
        check(what, len, gate.len())?;
    }
    let buffers = [
        Buffer::host(gate),
        Buffer::host(up),
        Buffer::host(dy),
        Buffer::host_mut(d_gate),
        Buffer::host_mut(d_up),
    ];
    launch::backward(&mut Host::default(), T::ELEMENT, buffers, gate.len())
}
