//! The launch of `kernels/adamw.cu`: a block per chunk of the flat state, from a table of
//! chunks that never straddle two tensors; 4 elements of each array at a time where the
//! arrays are aligned for it (`adamw_step`), else one (`adamw_step_scalar`).

use candle_core::Result;

use crate::adamw::{plan_chunks, Chunk, Scalars};
use crate::launch::{plain_bytes, Arg, Buffer, Executor, Launch, VECTOR_BYTES};

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
    // Four f32 are 16 bytes; their bf16 copies, 8.
    let vector = [b.master, b.m, b.v, b.grad].iter().all(|f| f.is_aligned(VECTOR_BYTES))
        && b.compute.is_none_or(|c| c.is_aligned(VECTOR_BYTES / 2));
    let (kernel, align) = if vector { ("adamw_step", VECTOR_BYTES) } else { ("adamw_step_scalar", 4) };
    let launch = Launch::new("adamw", kernel, chunks.len() as u32, THREADS)
        .buffer("master", b.master, n * 4, align)
        .buffer("m", b.m, n * 4, align)
        .buffer("v", b.v, n * 4, align)
        .buffer("grad", b.grad, n * 4, align)
        .maybe_buffer("compute", b.compute, n * 2, align / 2)
        .buffer("chunks", table, std::mem::size_of_val(chunks.as_slice()), 8)
        .arg(Arg::Struct(plain_bytes(&[scalars])));
    exec.run(&launch)
}
