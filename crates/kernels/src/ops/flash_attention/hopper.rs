//! The launches of `kernels/flash_attention_sm90.cu`, the Hopper kernels (wgmma, TMA,
//! warp specialisation): the same work lists as the mma.sync kernels' (`super::launch`),
//! with q, k and v reached through tensor maps instead of pointers.

use candle_core::Result;

use super::launch::{forward_outputs, shape_args, table, BackwardBuffers, ForwardBuffers};
use crate::attention::{key_tiles, AttentionShape, Segments};
use crate::launch::{grid_stride_blocks, Arg, Buffer, Element, Executor, Launch, ELEMENTWISE_THREADS};
use crate::tensor_map::{Swizzle, TensorMapSpec};

const SOURCE: &str = "flash_attention_sm90";
/// A producer warpgroup and two consumer warpgroups (`fa3::kThreads`).
const THREADS: u32 = 384;
/// Query rows per forward block (`fa3::kQueryRows`) and keys per pipeline stage
/// (`fa3::kKeys`).
const QUERY_ROWS: usize = 128;
const KEYS: usize = 128;
/// Stages of K and V in the forward (`fa3::kForwardStages`), of Q and dO in the backward
/// (`fa3::kBackwardStages`).
const FORWARD_STAGES: usize = 3;
const BACKWARD_STAGES: usize = 2;
/// bf16 columns of one TMA box: a 128-byte swizzle row.
const SPAN: usize = 64;

/// Key rows per backward block (`fa3::kKeyRows`: 64 per consumer) and query rows per
/// backward step (`fa3::kStepQueries`).
const KEY_ROWS: usize = 128;
const STEP_QUERIES: usize = 64;

/// Dynamic shared memory of the backward (`fa3::BackwardShared::kBytes`): K and V, the
/// stages of Q and dO, dS^T, two buffers of a step's lse and D, and 5 barriers.
pub fn backward_shared_bytes(head_dim: usize) -> usize {
    2 * KEY_ROWS * head_dim * 2
        + 2 * BACKWARD_STAGES * STEP_QUERIES * head_dim * 2
        + KEY_ROWS * STEP_QUERIES * 2
        + 2 * 2 * STEP_QUERIES * 4
        + 8 * (1 + 2 * BACKWARD_STAGES)
}

/// Dynamic shared memory of the forward (`fa3::ForwardShared::kBytes`): Q, the stages of
/// K and V, and 10 barriers.
pub fn forward_shared_bytes(head_dim: usize) -> usize {
    QUERY_ROWS * head_dim * 2 + 2 * FORWARD_STAGES * KEYS * head_dim * 2 + 8 * (1 + 3 * FORWARD_STAGES)
}

/// The tensor map of a `[tokens, heads, head_dim]` bf16 buffer, in boxes of one head's
/// `rows` rows by 64 columns, 128-byte swizzled, as the kernels' tiles are laid out.
fn rows_map(
    exec: &mut impl Executor,
    buffer: Buffer,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    rows: usize,
) -> Result<Arg> {
    let spec = TensorMapSpec::new(
        buffer,
        Element::Bf16,
        &[head_dim as u64, heads as u64, tokens as u64],
        &[(head_dim * 2) as u64, (heads * head_dim * 2) as u64],
        &[SPAN as u32, 1, rows as u32],
        Swizzle::B128,
    )?;
    Ok(Arg::tensor_map(&exec.tensor_map(&spec)?))
}

/// A block per (query tile, query head) of the mma.sync forward's work list (`tiles`: the
/// table, its bytes and its length).
pub(crate) fn forward(
    exec: &mut impl Executor,
    s: AttentionShape,
    b: ForwardBuffers,
    (tiles_at, tiles_bytes, blocks): (Buffer, usize, usize),
    scale: f32,
) -> Result<()> {
    let maps = [
        rows_map(exec, b.q, s.q_tokens, s.q_heads, s.head_dim, QUERY_ROWS)?,
        rows_map(exec, b.k, s.k_tokens, s.kv_heads, s.head_dim, KEYS)?,
        rows_map(exec, b.v, s.k_tokens, s.kv_heads, s.head_dim, KEYS)?,
    ];
    let kernel = format!("flash_attention_fwd_sm90_d{}", s.head_dim);
    let launch = warpgroups(kernel, blocks, s.q_heads, forward_shared_bytes(s.head_dim), maps);
    exec.run(&forward_outputs(launch, &s, &b, tiles_at, tiles_bytes, scale))
}

/// A launch of the three warpgroups over `blocks` x `heads`, with its shared memory and its
/// tensor maps as the first arguments.
fn warpgroups(
    kernel: String,
    blocks: usize,
    heads: usize,
    shared: usize,
    maps: impl IntoIterator<Item = Arg>,
) -> Launch {
    let launch =
        Launch::new(SOURCE, kernel, blocks as u32, THREADS).grid_y(heads as u32).hopper().shared(shared);
    maps.into_iter().fold(launch, Launch::arg)
}

/// A grid-stride launch over `elements` of the small kernels around the backward (sm_90a
/// code like the rest of the source).
fn elementwise(kernel: &str, elements: usize) -> Launch {
    Launch::new(SOURCE, kernel, grid_stride_blocks(elements), ELEMENTWISE_THREADS).hopper()
}

/// The backward after D (`delta`, from the mma.sync source's kernel): the f32 sum of dQ
/// and its counters cleared; dK, dV and that sum by a block per (key tile, kv head), taken
/// in order from a counter, each key tile adding its share of a dQ tile after the
/// segment's key tiles before it; then dQ = scale x the sum, as bf16. Every run gives the
/// same bits.
pub(crate) fn backward(
    exec: &mut impl Executor,
    s: AttentionShape,
    b: BackwardBuffers,
    delta: Buffer,
    cu: Segments<'_>,
    scale: f32,
) -> Result<()> {
    let keys = key_tiles(cu, KEY_ROWS);
    let (q_elements, stats) = (s.elements(false), s.q_heads * s.q_tokens);
    let dq_sum = exec.scratch(q_elements * 4)?;
    // A turn counter per (head, query), then the counter the blocks take their work from.
    let counters = stats + 1;
    let turns = exec.scratch(counters * 4)?;
    let clear = elementwise("flash_attention_clear_sm90", q_elements)
        .buffer("dq_sum", dq_sum, q_elements * 4, 4)
        .arg(Arg::U64(q_elements as u64))
        .buffer("turns", turns, counters * 4, 4)
        .arg(Arg::U64(counters as u64));
    exec.run(&clear)?;

    let (key_table, key_bytes) = table(exec, &keys)?;
    let maps = [
        rows_map(exec, b.q, s.q_tokens, s.q_heads, s.head_dim, STEP_QUERIES)?,
        rows_map(exec, b.k, s.k_tokens, s.kv_heads, s.head_dim, KEY_ROWS)?,
        rows_map(exec, b.v, s.k_tokens, s.kv_heads, s.head_dim, KEY_ROWS)?,
        rows_map(exec, b.d_out, s.q_tokens, s.q_heads, s.head_dim, STEP_QUERIES)?,
    ];
    let kv_bytes = s.elements(true) * 2;
    let kernel = format!("flash_attention_bwd_sm90_d{}", s.head_dim);
    let launch = warpgroups(kernel, keys.len(), s.kv_heads, backward_shared_bytes(s.head_dim), maps)
        .buffer("lse", b.lse, stats * 4, 4)
        .buffer("delta", delta, stats * 4, 4)
        .buffer("dq_sum", dq_sum, q_elements * 4, 4)
        .buffer("turns", turns, counters * 4, 4)
        .buffer("dk", b.dk, kv_bytes, 4)
        .buffer("dv", b.dv, kv_bytes, 4)
        .buffer("tiles", key_table, key_bytes, 4);
    exec.run(&shape_args(launch, &s, scale).arg(Arg::F32(scale)))?;

    let dq = elementwise("flash_attention_dq_sm90", q_elements)
        .buffer("dq_sum", dq_sum, q_elements * 4, 4)
        .buffer("dq", b.dq, q_elements * 2, 2)
        .arg(Arg::U64(q_elements as u64))
        .arg(Arg::F32(scale));
    exec.run(&dq)
}
