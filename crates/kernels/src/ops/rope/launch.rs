//! The launch of `kernels/rope.cu`: a grid-stride loop over (token, head, i < head_dim / 2)
//! pairs, a 16-byte pack of them a thread where head_dim / 2 is a multiple of the pack and
//! every buffer is 16-byte aligned.

use candle_core::Result;

use crate::launch::{
    grid_stride_blocks, Access, Arg, Buffer, Element, Executor, Launch, ELEMENTWISE_THREADS,
};

/// The buffers: x (or dy), the f32 cos and sin tables, and y (or dx; may be x).
pub(crate) struct Buffers {
    pub x: Buffer,
    pub cos: Buffer,
    pub sin: Buffer,
    pub y: Buffer,
}

/// The rotation of `[tokens, heads, head_dim]` (`backward`: the transposed one).
pub(crate) fn rotate(
    exec: &mut impl Executor,
    element: Element,
    backward: bool,
    b: Buffers,
    [tokens, heads, head_dim]: [usize; 3],
) -> Result<()> {
    let pairs = tokens * heads * head_dim / 2;
    if pairs == 0 {
        return Ok(());
    }
    let fits = (head_dim / 2).is_multiple_of(Access::Vector.width(element));
    let access = Access::of(fits, [b.x, b.cos, b.sin, b.y]);
    let kernel = access.kernel(if backward { "rope_bwd" } else { "rope_fwd" }, element);
    let (size, bytes, table) = (element.size(), 2 * pairs * element.size(), tokens * head_dim * 4);
    let blocks = grid_stride_blocks(pairs / access.width(element));
    let launch = Launch::new("rope", kernel, blocks, ELEMENTWISE_THREADS)
        .buffer("x", b.x, bytes, access.align(size))
        .buffer("cos", b.cos, table, access.align(4))
        .buffer("sin", b.sin, table, access.align(4))
        .buffer("y", b.y, bytes, access.align(size))
        .arg(Arg::U64(tokens as u64))
        .arg(Arg::I32(heads as i32))
        .arg(Arg::I32(head_dim as i32));
    exec.run(&launch)
}
