//! The launches of `kernels/swiglu.cu`: grid-stride loops over the elements, 16 bytes of
//! each buffer at a time where all are 16-byte aligned.

use candle_core::Result;

use crate::launch::{
    grid_stride_blocks, Access, Arg, Buffer, Element, Executor, Launch, ELEMENTWISE_THREADS,
};

/// `y = silu(gate) * up` over `n` elements.
pub(crate) fn forward(
    exec: &mut impl Executor,
    element: Element,
    [gate, up, y]: [Buffer; 3],
    n: usize,
) -> Result<()> {
    elementwise(exec, element, "swiglu_fwd", &[("gate", gate), ("up", up), ("y", y)], n)
}

/// `d_gate` and `d_up` from `gate`, `up` and `dy`, over `n` elements.
pub(crate) fn backward(
    exec: &mut impl Executor,
    element: Element,
    [gate, up, dy, d_gate, d_up]: [Buffer; 5],
    n: usize,
) -> Result<()> {
    let buffers = [("gate", gate), ("up", up), ("dy", dy), ("d_gate", d_gate), ("d_up", d_up)];
    elementwise(exec, element, "swiglu_bwd", &buffers, n)
}

/// `kernel` over `n` elements of each buffer, then `n`.
fn elementwise(
    exec: &mut impl Executor,
    element: Element,
    kernel: &str,
    buffers: &[(&'static str, Buffer)],
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let access = Access::of(true, buffers.iter().map(|b| b.1));
    let (size, blocks) = (element.size(), grid_stride_blocks(n.div_ceil(access.width(element))));
    let launch = buffers.iter().fold(
        Launch::new("swiglu", access.kernel(kernel, element), blocks, ELEMENTWISE_THREADS),
        |launch, &(what, buffer)| launch.buffer(what, buffer, n * size, access.align(size)),
    );
    exec.run(&launch.arg(Arg::U64(n as u64)))
}
