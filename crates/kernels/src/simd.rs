//! Vectorizable f32 arithmetic for the CPU bodies, and the run-time choice of instruction
//! set: the workspace builds for generic x86-64 (SSE2), so [`dispatch!`](crate::dispatch)
//! compiles a body for AVX-512, for AVX2+FMA and plain, and picks one when called. The
//! polynomial exponentials replace libm's scalar calls in loops that LLVM then vectorizes.

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
        // Every feature the AVX-512 body is compiled with (see `dispatch!`).
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
        {
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
#[macro_export]
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident => $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        pub fn $name(isa: $crate::simd::Isa, $($arg: $ty),*) {
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            {
                use $crate::simd::Isa;
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

/// `e^x` to about 1 ulp (Cephes' `expf`: `x = n ln 2 + r` with `ln 2` in two parts, so `r`
/// is exact, and a polynomial for `e^r` on `[-ln 2 / 2, ln 2 / 2]`). Flushes to 0 below
/// `e^-87.3` (the smallest normal f32), and `-inf` gives 0.
#[inline(always)]
pub fn exp<const FMA: bool>(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.3, 88.3);
    let shifted = madd::<FMA>(clamped, std::f32::consts::LOG2_E, MAGIC);
    let n = shifted - MAGIC;
    let r = madd::<FMA>(n, -0.693_359_4, clamped);
    let r = madd::<FMA>(n, 2.121_944_4e-4, r);
    let int = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let mut p = 1.987_569_2e-4;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 0.5);
    let e = madd::<FMA>(p, r * r, r) + 1.0;
    let two_n = f32::from_bits(((int + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        e * two_n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 * 1e-3;
            for got in [exp::<false>(x), exp::<true>(x)] {
                let want = (x as f64).exp();
                worst = worst.max(((got as f64 - want) / want).abs());
            }
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp::<false>(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp::<true>(-100.0), 0.0);
        assert_eq!(exp::<false>(0.0), 1.0);
    }

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
