//! The RMSNorm kernels under the emulation, over host slices, through the same launches
//! as the device.

use candle_core::Result;

use super::launch::{self, Backward, Forward};
use crate::emulated::{check, Element, Host};
use crate::launch::Buffer;

/// RMSNorm forward over the rows of `x` (of `w.len()` columns). With `residual` =
/// `(r, sum)`, the fused form: the rows are `x + r` (rounded), written to `sum`, then
/// normalised.
pub fn rms_norm_fwd<T: Element>(
    x: &[T],
    residual: Option<(&[T], &mut [T])>,
    w: &[T],
    y: &mut [T],
    eps: f32,
) -> Result<()> {
    let cols = w.len();
    let rows = x.len() / cols.max(1);
    check("x", x.len(), rows * cols)?;
    check("y", y.len(), x.len())?;
    let residual = match residual {
        Some((r, sum)) => {
            check("residual", r.len(), x.len())?;
            check("sum", sum.len(), x.len())?;
            Some((Buffer::host(r), Buffer::host_mut(sum)))
        }
        None => None,
    };
    let buffers = Forward { x: Buffer::host(x), residual, w: Buffer::host(w), y: Buffer::host_mut(y) };
    launch::forward(&mut Host::default(), T::ELEMENT, buffers, rows, cols, eps)
}

/// RMSNorm backward: `dx` and `dw` in the input's dtype. `d_add`, the gradient that
/// reaches the fused form's sum directly, is added to `dx`.
pub fn rms_norm_bwd<T: Element>(
    x: &[T],
    w: &[T],
    dy: &[T],
    d_add: Option<&[T]>,
    dx: &mut [T],
    dw: &mut [T],
    eps: f32,
) -> Result<()> {
    let cols = w.len();
    let rows = x.len() / cols.max(1);
    check("x", x.len(), rows * cols)?;
    for (what, len) in [("dy", dy.len()), ("dx", dx.len()), ("d_add", d_add.map_or(x.len(), <[T]>::len))] {
        check(what, len, x.len())?;
    }
    check("dw", dw.len(), cols)?;
    let buffers = Backward {
        x: Buffer::host(x),
        w: Buffer::host(w),
        dy: Buffer::host(dy),
        d_add: d_add.map(Buffer::host),
        dx: Buffer::host_mut(dx),
        dw: Buffer::host_mut(dw),
    };
    launch::backward(&mut Host::default(), T::ELEMENT, buffers, rows, cols, eps)
}
