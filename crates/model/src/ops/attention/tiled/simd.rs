//! The arithmetic of the attention kernels in forms LLVM vectorizes: fixed-width rows of
//! [`BC`] keys, reductions over explicit lanes (float addition is not associative, so the
//! compiler may not reorder a plain running sum; the lanes fix one order, so that a
//! sum runs the same way every time), and a polynomial `exp2`.
//!
//! The workspace builds for generic x86-64 (SSE2), so `davinci_kernels::dispatch!` compiles
//! each kernel body three times, for AVX-512, for AVX2+FMA and plain, and picks one at run
//! time.

/// Keys per tile: one score row of a tile is `[f32; BC]`, a few vector registers.
pub const BC: usize = 64;

pub(super) use davinci_kernels::dispatch;
pub use davinci_kernels::simd::{exp2, isa, madd};

/// Accumulators of a reduction: 16 f32, one AVX-512 register (two AVX2, four SSE).
const LANES: usize = 16;

/// Sums lanes pairwise, halving each time.
#[inline(always)]
fn fold(mut acc: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] = op(acc[l], acc[l + width]);
        }
        width /= 2;
    }
    acc[0]
}

#[inline(always)]
pub fn sum(a: &[f32; BC]) -> f32 {
    let mut acc = [0f32; LANES];
    for a in a.chunks_exact(LANES) {
        for l in 0..LANES {
            acc[l] += a[l];
        }
    }
    fold(acc, |x, y| x + y)
}

#[inline(always)]
pub fn max(a: &[f32; BC]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    for a in a.chunks_exact(LANES) {
        for l in 0..LANES {
            acc[l] = if a[l] > acc[l] { a[l] } else { acc[l] };
        }
    }
    fold(acc, |x, y| if x > y { x } else { y })
}

/// `x · rows` for `rows` `[d][BC]` (a transposed tile): one score per key, as `d` axpys
/// over the contiguous keys.
#[inline(always)]
pub fn row_times<const FMA: bool>(x: &[f32], rows: &[[f32; BC]]) -> [f32; BC] {
    let mut out = [0f32; BC];
    for (&a, row) in x.iter().zip(rows) {
        for j in 0..BC {
            out[j] = madd::<FMA>(a, row[j], out[j]);
        }
    }
    out
}

/// [`row_times`] of `R` rows at once: each element of `rows` is loaded once for all `R`
/// (the same sums, in the same order, as `R` calls).
#[inline(always)]
pub fn rows_times<const FMA: bool, const R: usize>(xs: [&[f32]; R], rows: &[[f32; BC]]) -> [[f32; BC]; R] {
    let mut out = [[0f32; BC]; R];
    for (k, row) in rows.iter().enumerate() {
        let a = xs.map(|x| x[k]);
        for j in 0..BC {
            for r in 0..R {
                out[r][j] = madd::<FMA>(a[r], row[j], out[r][j]);
            }
        }
    }
    out
}

/// `rows[x] += a[0][x] * p[0] + a[1][x] * p[1] + ..` in that order for every `x`: rank-one
/// updates of a transposed tile, `R` at a time so that each element is loaded and stored
/// once per `R` (the same bits as `R` single updates).
#[inline(always)]
pub fn add_outer<const FMA: bool, const R: usize>(
    rows: &mut [[f32; BC]],
    a: [&[f32]; R],
    p: &[[f32; BC]; R],
) {
    let d = rows.len();
    let a = a.map(|a| &a[..d]);
    for (x, row) in rows.iter_mut().enumerate() {
        for j in 0..BC {
            let mut acc = row[j];
            for r in 0..R {
                acc = madd::<FMA>(a[r][x], p[r][j], acc);
            }
            row[j] = acc;
        }
    }
}

/// Query rows a block of [`add_product`] holds in registers.
const BLOCK_ROWS: usize = 4;

/// `acc[rows][dp] += a[rows][..n] × b[n][dp]` with `b` row-major `[BC][dp]` and `dp` a
/// multiple of [`LANES`]: blocks of [`BLOCK_ROWS`] rows by [`LANES`] columns stay in
/// registers while the `n` keys stream past, each key one load and a broadcast per row.
#[inline(always)]
pub fn add_product<const FMA: bool>(a: &[[f32; BC]], n: usize, b: &[f32], dp: usize, acc: &mut [f32]) {
    for (a, acc) in a.chunks(BLOCK_ROWS).zip(acc.chunks_mut(BLOCK_ROWS * dp)) {
        if a.len() == BLOCK_ROWS {
            add_block::<FMA, BLOCK_ROWS>(a, n, b, dp, acc);
        } else {
            for (a, acc) in a.chunks(1).zip(acc.chunks_mut(dp)) {
                add_block::<FMA, 1>(a, n, b, dp, acc);
            }
        }
    }
}

#[inline(always)]
fn add_block<const FMA: bool, const R: usize>(
    a: &[[f32; BC]],
    n: usize,
    b: &[f32],
    dp: usize,
    acc: &mut [f32],
) {
    for c in (0..dp).step_by(LANES) {
        let mut regs = [[0f32; LANES]; R];
        for (r, regs) in regs.iter_mut().enumerate() {
            regs.copy_from_slice(&acc[r * dp + c..r * dp + c + LANES]);
        }
        for (j, b) in b.chunks_exact(dp).take(n).enumerate() {
            let b = &b[c..c + LANES];
            for r in 0..R {
                let a = a[r][j];
                for l in 0..LANES {
                    regs[r][l] = madd::<FMA>(a, b[l], regs[r][l]);
                }
            }
        }
        for (r, regs) in regs.iter().enumerate() {
            acc[r * dp + c..r * dp + c + LANES].copy_from_slice(regs);
        }
    }
}

/// `d` rounded up to whole [`LANES`], the row width of [`load_rows`] and [`add_product`].
pub fn padded(d: usize) -> usize {
    d.div_ceil(LANES) * LANES
}

/// Rows `first..first + n` (`n <= BC`) of head `head` of a `[tokens, heads, d]` buffer as
/// `[BC][dp]`, zero past `d` and past `n`.
pub fn load_rows(src: &[f32], heads: usize, head: usize, first: usize, n: usize, d: usize, dst: &mut [f32]) {
    dst.fill(0.0);
    let dp = dst.len() / BC;
    for j in 0..n {
        let at = ((first + j) * heads + head) * d;
        dst[j * dp..j * dp + d].copy_from_slice(&src[at..at + d]);
    }
}

/// Rows `first..first + n` (`n <= BC`) of head `head` of a `[tokens, heads, d]` buffer,
/// transposed into `[d][BC]`, the columns past `n` zero.
pub fn load_transposed(
    src: &[f32],
    heads: usize,
    head: usize,
    first: usize,
    n: usize,
    dst: &mut [[f32; BC]],
) {
    let d = dst.len();
    dst.iter_mut().for_each(|row| *row = [0.0; BC]);
    for (j, token) in (first..first + n).enumerate() {
        let at = (token * heads + head) * d;
        for (x, &value) in src[at..at + d].iter().enumerate() {
            dst[x][j] = value;
        }
    }
}
