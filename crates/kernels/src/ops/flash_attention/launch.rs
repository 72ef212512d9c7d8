//! The launches of `kernels/flash_attention.cu`: the forward over query tiles, and the
//! backward's three kernels (D = rowsum(dO * O), dQ over query tiles, dK and dV over key
//! tiles). The work lists are tables the kernels index by block; the kernels reach query
//! rows through `cu_seqlens_q`'s segments and key rows through `cu_seqlens_k`'s.

use candle_core::Result;

use crate::attention::{key_tiles, query_tiles, shared_bytes, AttentionShape, Segments, Tile, KEY_TILE};
use crate::launch::{plain_bytes, Arg, Buffer, Executor, Launch};

/// Which kernels run attention: the mma.sync ones (`kernels/flash_attention.cu`, any GPU
/// from sm_80), or Hopper's (`kernels/flash_attention_sm90.cu`: wgmma, TMA, warp
/// specialisation), which run on compute capability 9.0 alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    MmaSync,
    Hopper,
}

impl Kernels {
    /// The kernels for a GPU of compute capability `major`.`minor`: Hopper's where sm_90a
    /// code runs (9.0), mma.sync everywhere else.
    pub fn for_capability(major: u32, minor: u32) -> Self {
        if crate::launch::runs_sm90a(major, minor) {
            Kernels::Hopper
        } else {
            Kernels::MmaSync
        }
    }
}

const SOURCE: &str = "flash_attention";
/// Threads of the tile kernels: 4 warps (of 32 query rows in the forward and dQ, 16 key
/// rows in dK/dV).
const THREADS: u32 = 128;
/// Threads of the delta kernel: 8 warps, a row each per pass.
const DELTA_THREADS: u32 = 256;
/// q, k, v and dO are copied 16 bytes at a time (cp.async).
const COPY_ALIGN: usize = 16;

/// bf16 bytes of q (or k and v).
fn bytes(s: &AttentionShape, kv: bool) -> usize {
    s.elements(kv) * 2
}

/// The work list as a table, and its length.
pub(super) fn table(exec: &mut impl Executor, tiles: &[Tile]) -> Result<(Buffer, usize)> {
    let bytes = plain_bytes(tiles);
    Ok((exec.table(&bytes)?, bytes.len()))
}

/// The shape and scale arguments every tile kernel ends with (the dQ and dK/dV kernels
/// also take the plain scale).
pub(super) fn shape_args(launch: Launch, s: &AttentionShape, scale: f32) -> Launch {
    launch
        .arg(Arg::I32(s.q_tokens as i32))
        .arg(Arg::I32(s.q_heads as i32))
        .arg(Arg::I32(s.kv_heads as i32))
        .arg(Arg::F32(scale * std::f32::consts::LOG2_E))
}

pub(crate) struct ForwardBuffers {
    pub q: Buffer,
    pub k: Buffer,
    pub v: Buffer,
    pub out: Buffer,
    pub lse: Buffer,
}

/// A block per (query tile, query head). Rows outside every segment are not written.
pub(crate) fn forward(
    exec: &mut impl Executor,
    s: AttentionShape,
    b: ForwardBuffers,
    cu: Segments<'_>,
    scale: f32,
    kernels: Kernels,
) -> Result<()> {
    let tiles = query_tiles(cu);
    if tiles.is_empty() {
        return Ok(());
    }
    let (tiles_at, tiles_bytes) = table(exec, &tiles)?;
    if kernels == Kernels::Hopper {
        return super::hopper::forward(exec, s, b, (tiles_at, tiles_bytes, tiles.len()), scale);
    }
    let launch =
        Launch::new(SOURCE, format!("flash_attention_fwd_d{}", s.head_dim), tiles.len() as u32, THREADS)
            .grid_y(s.q_heads as u32)
            .shared(shared_bytes(s.head_dim)[0])
            .buffer("q", b.q, bytes(&s, false), COPY_ALIGN)
            .buffer("k", b.k, bytes(&s, true), COPY_ALIGN)
            .buffer("v", b.v, bytes(&s, true), COPY_ALIGN);
    exec.run(&forward_outputs(launch, &s, &b, tiles_at, tiles_bytes, scale))
}

/// The forward's arguments after its inputs, in both kernel families: out, lse, the work
/// list, then the shape and scale.
pub(super) fn forward_outputs(
    launch: Launch,
    s: &AttentionShape,
    b: &ForwardBuffers,
    tiles: Buffer,
    tiles_bytes: usize,
    scale: f32,
) -> Launch {
    let launch = launch
        .buffer("out", b.out, bytes(s, false), 2)
        .buffer("lse", b.lse, s.q_heads * s.q_tokens * 4, 4)
        .buffer("tiles", tiles, tiles_bytes, 4);
    shape_args(launch, s, scale)
}

/// D = rowsum(dO * O) of every query row (`[q_heads, q_tokens]` f32), which both
/// backwards read.
fn delta(exec: &mut impl Executor, s: &AttentionShape, b: &BackwardBuffers) -> Result<Buffer> {
    let (q_bytes, stats) = (bytes(s, false), s.q_heads * s.q_tokens * 4);
    let delta = exec.scratch(stats)?;
    let rows = s.q_tokens * s.q_heads;
    let warps = (DELTA_THREADS / 32) as usize;
    let delta_launch = Launch::new(
        SOURCE,
        "flash_attention_delta",
        rows.div_ceil(warps).clamp(1, 4096) as u32,
        DELTA_THREADS,
    )
    .buffer("out", b.out, q_bytes, 2)
    // Checked at the alignment the backward's copies need, so that a misaligned d_out
    // stops the backward before any kernel runs.
    .buffer("d_out", b.d_out, q_bytes, COPY_ALIGN)
    .buffer("delta", delta, stats, 4)
    .arg(Arg::I32(s.q_tokens as i32))
    .arg(Arg::I32(s.q_heads as i32))
    .arg(Arg::I32(s.head_dim as i32));
    exec.run(&delta_launch)?;
    Ok(delta)
}

pub(crate) struct BackwardBuffers {
    pub q: Buffer,
    pub k: Buffer,
    pub v: Buffer,
    pub out: Buffer,
    pub d_out: Buffer,
    pub lse: Buffer,
    pub dq: Buffer,
    pub dk: Buffer,
    pub dv: Buffer,
}

/// D, then dQ (a block per query tile and head), then dK and dV (a block per key tile and
/// kv head, summing the group's query heads in registers). Nothing is summed with
/// atomics, so every run gives the same bits.
pub(crate) fn backward(
    exec: &mut impl Executor,
    s: AttentionShape,
    b: BackwardBuffers,
    cu: Segments<'_>,
    scale: f32,
    kernels: Kernels,
) -> Result<()> {
    let queries = query_tiles(cu);
    if queries.is_empty() {
        // No query: every gradient is zero, as the callers' outputs start.
        return Ok(());
    }
    let (q_bytes, kv_bytes, stats) = (bytes(&s, false), bytes(&s, true), s.q_heads * s.q_tokens * 4);
    let delta = delta(exec, &s, &b)?;
    if kernels == Kernels::Hopper {
        return super::hopper::backward(exec, s, b, delta, cu, scale);
    }
    let keys = key_tiles(cu, KEY_TILE);
    let [_, dq_shared, dkdv_shared] = shared_bytes(s.head_dim);
    let inputs = |launch: Launch| {
        launch
            .buffer("q", b.q, q_bytes, COPY_ALIGN)
            .buffer("k", b.k, kv_bytes, COPY_ALIGN)
            .buffer("v", b.v, kv_bytes, COPY_ALIGN)
            .buffer("d_out", b.d_out, q_bytes, COPY_ALIGN)
            .buffer("lse", b.lse, stats, 4)
            .buffer("delta", delta, stats, 4)
    };
    let (query_table, query_bytes) = table(exec, &queries)?;
    let dq =
        Launch::new(SOURCE, format!("flash_attention_dq_d{}", s.head_dim), queries.len() as u32, THREADS)
            .grid_y(s.q_heads as u32)
            .shared(dq_shared);
    let dq = inputs(dq).buffer("dq", b.dq, q_bytes, 2).buffer("tiles", query_table, query_bytes, 4);
    exec.run(&shape_args(dq, &s, scale).arg(Arg::F32(scale)))?;

    let (key_table, key_bytes) = table(exec, &keys)?;
    let dkdv =
        Launch::new(SOURCE, format!("flash_attention_dkdv_d{}", s.head_dim), keys.len() as u32, THREADS)
            .grid_y(s.kv_heads as u32)
            .shared(dkdv_shared);
    let dkdv = inputs(dkdv)
        .buffer("dk", b.dk, kv_bytes, 2)
        .buffer("dv", b.dv, kv_bytes, 2)
        .buffer("tiles", key_table, key_bytes, 4);
    exec.run(&shape_args(dkdv, &s, scale).arg(Arg::F32(scale)))
}
