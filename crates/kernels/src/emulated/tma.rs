//! The self-test kernels of `kernels/tma_selftest_sm90.cu` under the emulation: TMA loads of
//! attention-shaped tensors through mbarriers, a two-stage pipeline, reads that skip the
//! wait, named barriers, and the misuses the emulation stops on. Each builds its tensor map
//! through [`Host`]'s [`Executor::tensor_map`] and launches through [`Launch`], as an op
//! would on the device.

use candle_core::{bail, Result};

use super::{check, Bf16, Host};
use crate::launch::{Arg, Buffer, Element, Executor, Launch};
use crate::tensor_map::{Swizzle, TensorMapSpec};

const SOURCE: &str = "tma_selftest_sm90";
/// Where `tma_pipeline`, `tma_early_read` and `tma_misuse` put their tiles: past the
/// barriers, on the boundary where a 128-byte swizzle's pattern starts.
const TILES_AT: usize = 1024;

/// The map of a `[tokens, heads, dim]` bf16 tensor (row-major, like attention's q, k, v):
/// dims innermost first, so (dim, heads, tokens), with boxes of `box_dims` in that order.
fn attention_map(
    tensor: &[Bf16],
    shape: [usize; 3],
    box_dims: [u32; 3],
    swizzle: Swizzle,
) -> Result<TensorMapSpec> {
    let [tokens, heads, dim] = shape;
    check("tensor", tensor.len(), tokens * heads * dim)?;
    let row = (dim * 2) as u64;
    let dims = [dim as u64, heads as u64, tokens as u64];
    Ok(TensorMapSpec::new(
        Buffer::host(tensor),
        Element::Bf16,
        &dims,
        &[row, row * heads as u64],
        &box_dims,
        swizzle,
    )?)
}

/// A tile as shared memory held it after one TMA load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmaBox {
    /// The tile's address in the shared-memory window (where the swizzle pattern starts
    /// from).
    pub address: u32,
    pub bytes: Vec<u8>,
}

/// Loads the box `box_dims` (dim, heads, tokens) at element coordinates `coords` (in the
/// same order, negative or past the end for zero fill) of the `[tokens, heads, dim]`
/// tensor, with `swizzle`, into shared memory `tile_offset` bytes in (a multiple of 128, at
/// least 128), and returns the tile's bytes.
pub fn tma_box(
    tensor: &[Bf16],
    shape: [usize; 3],
    box_dims: [u32; 3],
    swizzle: Swizzle,
    coords: [i32; 3],
    tile_offset: usize,
) -> Result<TmaBox> {
    let mut host = Host::default();
    let spec = attention_map(tensor, shape, box_dims, swizzle)?;
    let map = host.tensor_map(&spec)?;
    let bytes = spec.box_bytes();
    if tile_offset < 128 || !tile_offset.is_multiple_of(128) {
        bail!("tma_box: the tile goes on a multiple of 128 bytes past the barrier, not at {tile_offset}")
    }
    let mut out = vec![0u8; bytes];
    let mut address = [u32::MAX; 1];
    let launch = Launch::new(SOURCE, "tma_box", 1, 128)
        .shared(tile_offset + bytes)
        .arg(Arg::tensor_map(&map))
        .arg(Arg::I32(coords[0]))
        .arg(Arg::I32(coords[1]))
        .arg(Arg::I32(coords[2]))
        .arg(Arg::I32(tile_offset as i32))
        .arg(Arg::I32(bytes as i32))
        .buffer("out", Buffer::host_mut(&mut out), bytes, 1)
        .buffer("address", Buffer::host_mut(&mut address), 4, 4);
    host.run(&launch)?;
    Ok(TmaBox { address: address[0], bytes: out })
}

/// Runs the two-stage pipeline over `steps` steps of `rows` tokens of a `[tokens, 2, 64]`
/// bf16 tensor (no swizzle) and returns what the consumers copied out: step after step, the
/// stage's two boxes (head 0's rows, then head 1's) as shared memory held them.
pub fn tma_pipeline(tensor: &[Bf16], rows: usize, steps: usize) -> Result<Vec<u8>> {
    if rows == 0 || rows > 256 || steps == 0 {
        bail!("tma_pipeline: {steps} steps of {rows} rows (1 to 256 rows a box)")
    }
    let mut host = Host::default();
    let spec = attention_map(tensor, [rows * steps, 2, 64], [64, 1, rows as u32], Swizzle::None)?;
    let map = host.tensor_map(&spec)?;
    let stage = 2 * spec.box_bytes();
    let mut out = vec![0u8; steps * stage];
    let launch = Launch::new(SOURCE, "tma_pipeline", 1, 96)
        .shared(TILES_AT + 2 * stage)
        .arg(Arg::tensor_map(&map))
        .arg(Arg::I32(rows as i32))
        .arg(Arg::I32(steps as i32))
        .buffer("out", Buffer::host_mut(&mut out), steps * stage, 1);
    host.run(&launch)?;
    Ok(out)
}

/// What a reader saw in a tile before it waited properly, and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyRead {
    pub early: Vec<u8>,
    pub late: Vec<u8>,
}

/// Loads the box (64 x 1 x `rows`) at the origin of a `[rows, 1, 64]` bf16 tensor and reads
/// it before the right wait: with no wait at all, or (`wrong_parity`) after a wait on
/// parity 1 while phase 0 is still incomplete.
pub fn tma_early_read(tensor: &[Bf16], rows: usize, wrong_parity: bool) -> Result<EarlyRead> {
    let mut host = Host::default();
    let spec = attention_map(tensor, [rows, 1, 64], [64, 1, rows as u32], Swizzle::None)?;
    let map = host.tensor_map(&spec)?;
    let bytes = spec.box_bytes();
    let (mut early, mut late) = (vec![0u8; bytes], vec![0u8; bytes]);
    let launch = Launch::new(SOURCE, "tma_early_read", 1, 64)
        .shared(TILES_AT + bytes)
        .arg(Arg::tensor_map(&map))
        .arg(Arg::I32(i32::from(wrong_parity)))
        .arg(Arg::I32(bytes as i32))
        .buffer("early", Buffer::host_mut(&mut early), bytes, 1)
        .buffer("late", Buffer::host_mut(&mut late), bytes, 1);
    host.run(&launch)?;
    Ok(EarlyRead { early, late })
}

/// Runs `named_handover` over `blocks` blocks and `rounds` rounds: the values the readers
/// received, `[blocks][rounds][64]`.
pub fn named_handover(blocks: u32, rounds: usize) -> Result<Vec<i32>> {
    let len = blocks as usize * rounds * 64;
    let mut out = vec![i32::MIN; len];
    let launch = Launch::new(SOURCE, "named_handover", blocks, 128)
        .shared(64 * 4)
        .arg(Arg::I32(rounds as i32))
        .buffer("out", Buffer::host_mut(&mut out), len * 4, 4);
    Host::default().run(&launch)?;
    Ok(out)
}

/// The rules `tma_misuse` breaks, in the kernel's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misuse {
    WaitUninitialised,
    InitTwice,
    ArrivalPastCount,
    BytesPastExpected,
    ForeignMap,
    CopyOntoBarrier,
    BarrierWrittenOver,
    NamedCountNotWarps,
    NamedPartialWarps,
    NamedArriveTwice,
}

/// Runs `tma_misuse`: the emulation stops the process (so callers run it in a child).
pub fn tma_misuse(what: Misuse) -> Result<()> {
    let tensor = vec![0u16; 64 * 8];
    let mut host = Host::default();
    let map = match what {
        Misuse::ForeignMap => [0; 16],
        _ => host.tensor_map(&attention_map(&tensor, [8, 1, 64], [64, 1, 8], Swizzle::None)?)?,
    };
    let launch = Launch::new(SOURCE, "tma_misuse", 1, 64)
        .shared(TILES_AT + 64 * 2 * 8)
        .arg(Arg::tensor_map(&map))
        .arg(Arg::I32(what as i32));
    host.run(&launch)
}
