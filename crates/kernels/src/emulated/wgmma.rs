//! The self-test kernels of `kernels/wgmma_selftest_sm90.cu`, which expose the accumulators
//! of `wgmma.mma_async` (`kernels/hopper.cuh`) so that tests can check the matrix
//! descriptors' shared-memory layouts and the register fragments thread by thread. They run
//! through the launch path the ops use ([`Launch`] on the [`Host`] executor).
//!
//! A test gives a byte image of shared memory and descriptors whose start addresses count
//! from the image's first byte: the kernels copy the image to a 1024-byte boundary of the
//! dynamic shared memory (where swizzle patterns start) and move the descriptors there.

use candle_core::{bail, Result};

use super::{check, Host};
use crate::launch::{Arg, Buffer, Executor, Launch};

const SOURCE: &str = "wgmma_selftest_sm90";
/// Threads of a warpgroup, the kernels' block.
pub const WARPGROUP: usize = 128;

/// One `wgmma.mma_async.m64n{n}k16.f32.bf16.bf16`: D (64 x n) = A B, plus D if
/// `accumulate`. `trans_a` / `trans_b` make A M-major / B N-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wgmma {
    pub n: usize,
    pub a_desc: u64,
    pub b_desc: u64,
    pub trans_a: bool,
    pub trans_b: bool,
    pub accumulate: bool,
}

/// Every thread's accumulators after the wait: thread t's `n / 2` registers, d0 first.
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulators {
    pub n: usize,
    pub values: Vec<f32>,
}

impl Accumulators {
    pub fn thread(&self, t: usize) -> &[f32] {
        &self.values[t * self.n / 2..(t + 1) * self.n / 2]
    }
}

/// The accumulators of the wgmma that `wgmma_read_before_wait` issues, read three times.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadBeforeWait {
    /// After both groups were committed, before any wait.
    pub before_wait: [Accumulators; 2],
    /// After `wait_group 1`.
    pub after_wait_1: [Accumulators; 2],
    /// After `wait_group 0`.
    pub after_wait_0: [Accumulators; 2],
}

fn check_shape(image: &[u8], n: usize, c: &[f32]) -> Result<()> {
    if !matches!(n, 32 | 64 | 128) {
        bail!("wgmma self-tests take n = 32, 64 or 128, not {n}")
    }
    if !image.len().is_multiple_of(16) || image.is_empty() {
        bail!("a shared-memory image of {} bytes: it must be a positive multiple of 16", image.len())
    }
    check("c", c.len(), WARPGROUP * n / 2)
}

/// One warpgroup launch over `image`, placed on a 1024-byte boundary of shared memory.
fn launch(kernel: &str, image: &[u8], host: &mut Host) -> Result<Launch> {
    let table = host.table(image)?;
    Ok(Launch::new(SOURCE, kernel, 1, WARPGROUP as u32)
        .shared(image.len() + 1024)
        .buffer("image", table, image.len(), 4)
        .arg(Arg::I32(image.len() as i32)))
}

/// `op` with A and B from shared memory, `steps` times on the same accumulators in one
/// group: the s-th with both descriptors' start addresses moved `s * a_step` and
/// `s * b_step` bytes on (the next K step of a tile), the first accumulating onto `c` if
/// `op.accumulate`, the others onto the result before them.
pub fn wgmma_ss_chain(
    image: &[u8],
    op: Wgmma,
    steps: usize,
    a_step: u32,
    b_step: u32,
    c: &[f32],
) -> Result<Accumulators> {
    check_shape(image, op.n, c)?;
    let mut out = vec![f32::NAN; WARPGROUP * op.n / 2];
    let mut host = Host::default();
    let trans = op.trans_a as i32 + 2 * op.trans_b as i32;
    let launch = launch("wgmma_dump_ss", image, &mut host)?
        .arg(Arg::U64(op.a_desc))
        .arg(Arg::U64(op.b_desc))
        .arg(Arg::I32(op.n as i32))
        .arg(Arg::I32(trans))
        .arg(Arg::I32(steps as i32))
        .arg(Arg::I32(a_step as i32))
        .arg(Arg::I32(b_step as i32))
        .arg(Arg::I32(op.accumulate as i32))
        .buffer("c", Buffer::host(c), c.len() * 4, 4)
        .buffer("out", Buffer::host_mut(&mut out), out.len() * 4, 4);
    host.run(&launch)?;
    Ok(Accumulators { n: op.n, values: out })
}

/// `op` with A and B from shared memory, once.
pub fn wgmma_ss(image: &[u8], op: Wgmma, c: &[f32]) -> Result<Accumulators> {
    wgmma_ss_chain(image, op, 1, 0, 0, c)
}

/// `op` with A from registers (`a[t]`: thread t's four words of its warp's 16 x 16 A
/// fragment; `op.a_desc` and `op.trans_a` unused) and B from shared memory.
pub fn wgmma_rs(image: &[u8], a: &[[u32; 4]; WARPGROUP], op: Wgmma, c: &[f32]) -> Result<Accumulators> {
    check_shape(image, op.n, c)?;
    let mut out = vec![f32::NAN; WARPGROUP * op.n / 2];
    let mut host = Host::default();
    let launch = launch("wgmma_dump_rs", image, &mut host)?
        .buffer("a", Buffer::host(a.as_slice()), WARPGROUP * 16, 4)
        .arg(Arg::U64(op.b_desc))
        .arg(Arg::I32(op.n as i32))
        .arg(Arg::I32(op.trans_b as i32))
        .arg(Arg::I32(op.accumulate as i32))
        .buffer("c", Buffer::host(c), c.len() * 4, 4)
        .buffer("out", Buffer::host_mut(&mut out), out.len() * 4, 4);
    host.run(&launch)?;
    Ok(Accumulators { n: op.n, values: out })
}

/// Two groups of one m64n32k16 (K-major A and B through `a_desc` and `b_desc`), the first
/// onto `c`, the second onto nothing, with their accumulators read before and between the
/// waits, which a kernel must not do; with `write_in_flight` the second's are written to
/// before their wait as well (the emulation stops the process there).
pub fn wgmma_read_before_wait(
    image: &[u8],
    a_desc: u64,
    b_desc: u64,
    c: &[f32],
    write_in_flight: bool,
) -> Result<ReadBeforeWait> {
    check_shape(image, 32, c)?;
    // Zeros, not NaN: the NaN the tests look for must come from the kernel.
    let mut out = vec![0.0f32; 3 * WARPGROUP * 32];
    let mut host = Host::default();
    let launch = launch("wgmma_read_before_wait", image, &mut host)?
        .arg(Arg::U64(a_desc))
        .arg(Arg::U64(b_desc))
        .buffer("c", Buffer::host(c), c.len() * 4, 4)
        .arg(Arg::I32(write_in_flight as i32))
        .buffer("out", Buffer::host_mut(&mut out), out.len() * 4, 4);
    host.run(&launch)?;
    let pair = |snapshot: usize| {
        let half = |which: usize| Accumulators {
            n: 32,
            values: (0..WARPGROUP)
                .flat_map(|t| {
                    let at = (snapshot * WARPGROUP + t) * 32 + which * 16;
                    out[at..at + 16].to_vec()
                })
                .collect(),
        };
        [half(0), half(1)]
    };
    Ok(ReadBeforeWait { before_wait: pair(0), after_wait_1: pair(1), after_wait_0: pair(2) })
}

/// One m64n32k16 (K-major A and B) over `image` staged into shared memory without the
/// fence.proxy.async that must follow the threads' stores: the emulation stops the process.
pub fn wgmma_without_proxy_fence(image: &[u8], a_desc: u64, b_desc: u64) -> Result<Accumulators> {
    let mut out = vec![f32::NAN; WARPGROUP * 16];
    let mut host = Host::default();
    let launch = launch("wgmma_without_proxy_fence", image, &mut host)?
        .arg(Arg::U64(a_desc))
        .arg(Arg::U64(b_desc))
        .buffer("out", Buffer::host_mut(&mut out), out.len() * 4, 4);
    host.run(&launch)?;
    Ok(Accumulators { n: 32, values: out })
}
