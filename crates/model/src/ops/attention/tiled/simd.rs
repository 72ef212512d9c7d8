//! The arithmetic of the attention kernels in forms LLVM vectorizes: fixed-width rows of
//! [`BC`] keys, reductions over explicit lanes (float addition is not associative, so the
//! compiler may not reorder a plain running sum; the lanes fix one order, so that a
//! sum runs the same way every time), and a polynomial `exp2`.
//!
//! The workspace builds for generic x86-64 (SSE2), so [`dispatch!`] compiles each kernel
//! body three times, for AVX-512, for AVX2+FMA and plain, and picks one at run time.

/// Keys per tile: one score row of a tile is `[f32; BC]`, a few vector registers.
pub const BC: usize = 64;

/// Accumulators of a reduction: 16 f32, one AVX-512 register (two AVX2, four SSE).
const LANES: usize = 16;

/// The instruction set the kernels run with, detected once per call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isa {
    Avx512,
    Avx2,
    Plain,
}

pub fn isa() -> Isa {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Plain
}

/// Defines `pub fn $name(isa, args..)` running the `#[inline(always)]` generic `$body` with
/// fused multiply-adds under AVX-512 or AVX2+FMA, and unfused elsewhere (a software `fma`
/// would be a libm call per element). Results differ between those by rounding only, and
/// are the same from run to run on one machine.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident => $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        pub fn $name(isa: $crate::ops::attention::tiled::simd::Isa, $($arg: $ty),*) {
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            {
                use $crate::ops::attention::tiled::simd::Isa;
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body::<true>($($arg),*)
                }
                match isa {
                    // SAFETY: `isa()` returned these only after `is_x86_feature_detected!`
                    // confirmed the features the functions are compiled with.
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Plain => {}
                }
            }
            $body::<false>($($arg),*)
        }
    };
}
pub(super) use dispatch;

/// `a * b + c`, fused when `FMA` (then compiled with the instruction) and not otherwise.
#[inline(always)]
pub fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `2^x` to about 2 ulp (Cephes' `exp2f` polynomial on `[-0.5, 0.5]` after splitting off
/// the nearest integer, which goes into the exponent bits). Flushes to 0 below `2^-126`,
/// and `-inf` (a masked score) gives 0.
#[inline(always)]
pub fn exp2<const FMA: bool>(x: f32) -> f32 {
    // Adding 1.5 * 2^23 rounds to an integer, which lands in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let clamped = x.clamp(-126.0, 126.0);
    let shifted = clamped + MAGIC;
    let n = shifted - MAGIC;
    let f = clamped - n;
    let int = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let mut p = 1.535_336_2e-4;
    p = madd::<FMA>(p, f, 1.339_887_4e-3);
    p = madd::<FMA>(p, f, 9.618_437e-3);
    p = madd::<FMA>(p, f, 5.550_332_5e-2);
    p = madd::<FMA>(p, f, 2.402_264_8e-1);
    p = madd::<FMA>(p, f, 6.931_472e-1);
    p = madd::<FMA>(p, f, 1.0);
    let two_n = f32::from_bits(((int + 127) as u32) << 23);
    if x < -126.0 {
        0.0
    } else {
        p * two_n
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp2_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in -125_000..=20_000 {
            let x = i as f32 * 1e-3;
            for got in [exp2::<false>(x), exp2::<true>(x)] {
                let want = (x as f64).exp2();
                worst = worst.max(((got as f64 - want) / want).abs());
            }
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp2::<false>(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp2::<false>(-200.0), 0.0);
        assert_eq!(exp2::<false>(0.0), 1.0);
    }
}
