//! The launch of `kernels/adamw.cu`: a block per chunk of the flat state, from a table of
//! chunks that never straddle two tensors.

use candle_core::Result;

use crate::adamw::{plan_chunks, Chunk, Scalars};
use crate::launch::{plain_bytes, Arg, Buffer, Executor, Launch};

const THREADS: u32 = 256;

/// The flat state of one shard: master weights, moments, gradient, and the optional bf16
/// copy of the weights that the forward uses.
pub(crate) struct Buffers {
    pub master: Buffer,
    pub m: Buffer,
    pub v: Buffer,
    pub grad: Buffer,
    pub compute: Option<Buffer>,
}

/// One step over `segments` `(length, decayed)`, laid out in order over `n` elements, in
/// chunks of at most `chunk_len`.
pub(crate) fn step(
    exec: &mut impl Executor,
    b: Buffers,
    segments: &[(usize, bool)],
    chunk_len: usize,
    scalars: Scalars,
) -> Result<()> {
    let chunks: Vec<Chunk> = plan_chunks(segments, chunk_len);
    if chunks.is_empty() {
        return Ok(());
    }
    let n: usize = segments.iter().map(|s| s.0).sum();
    let table = exec.table(&plain_bytes(&chunks))?;
    let launch = Launch::new("adamw", "adamw_step", chunks.len() as u32, THREADS)
        .buffer("master", b.master, n * 4, 4)
        .buffer("m", b.m, n * 4, 4)
        .buffer("v", b.v, n * 4, 4)
        .buffer("grad", b.grad, n * 4, 4)
        .maybe_buffer("compute", b.compute, n * 2, 2)
        .buffer("chunks", table, std::mem::size_of_val(chunks.as_slice()), 8)
        .arg(Arg::Struct(plain_bytes(&[scalars])));
    exec.run(&launch)
}
