//! The launch of `kernels/rope.cu`: a grid-stride loop over (token, head, i < head_dim / 2)
//! pairs.

use candle_core::Result;

use crate::launch::{grid_stride_blocks, Arg, Buffer, Element, Executor, Launch, ELEMENTWISE_THREADS};

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
    let kernel = format!("rope_{}_{}", if backward { "bwd" } else { "fwd" }, element.suffix());
    let (size, bytes, table) = (element.size(), 2 * pairs * element.size(), tokens * head_dim * 4);
    let launch = Launch::new("rope", kernel, grid_stride_blocks(pairs), ELEMENTWISE_THREADS)
        .buffer("x", b.x, bytes, size)
        .buffer("cos", b.cos, table, 4)
        .buffer("sin", b.sin, table, 4)
        .buffer("y", b.y, bytes, size)
        .arg(Arg::U64(tokens as u64))
        .arg(Arg::I32(heads as i32))
        .arg(Arg::I32(head_dim as i32));
    exec.run(&launch)
}
