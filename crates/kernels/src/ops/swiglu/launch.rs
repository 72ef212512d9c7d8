//! The launches of `kernels/swiglu.cu`: grid-stride loops over the elements.

use candle_core::Result;

use crate::launch::{grid_stride_blocks, Arg, Buffer, Element, Executor, Launch, ELEMENTWISE_THREADS};

const SOURCE: &str = "swiglu";

/// `y = silu(gate) * up` over `n` elements.
pub(crate) fn forward(
    exec: &mut impl Executor,
    element: Element,
    [gate, up, y]: [Buffer; 3],
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (size, bytes) = (element.size(), n * element.size());
    let launch = Launch::new(
        SOURCE,
        format!("swiglu_fwd_{}", element.suffix()),
        grid_stride_blocks(n),
        ELEMENTWISE_THREADS,
    )
    .buffer("gate", gate, bytes, size)
    .buffer("up", up, bytes, size)
    .buffer("y", y, bytes, size)
    .arg(Arg::U64(n as u64));
    exec.run(&launch)
}

/// `d_gate` and `d_up` from `gate`, `up` and `dy`, over `n` elements.
pub(crate) fn backward(
    exec: &mut impl Executor,
    element: Element,
    [gate, up, dy, d_gate, d_up]: [Buffer; 5],
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let (size, bytes) = (element.size(), n * element.size());
    let launch = Launch::new(
        SOURCE,
        format!("swiglu_bwd_{}", element.suffix()),
        grid_stride_blocks(n),
        ELEMENTWISE_THREADS,
    )
    .buffer("gate", gate, bytes, size)
    .buffer("up", up, bytes, size)
    .buffer("dy", dy, bytes, size)
    .buffer("d_gate", d_gate, bytes, size)
    .buffer("d_up", d_up, bytes, size)
    .arg(Arg::U64(n as u64));
    exec.run(&launch)
}
