//! The RMSNorm kernels, run under the emulation of the CUDA execution model, against a
//! plain f64 reference: awkward sizes (one column, a single row, columns not a multiple of
//! the block, more columns than threads), f32 and bf16, plain and fused with the residual
//! add. Outputs are poisoned with NaN first, so an element the kernel never writes fails.

use common::{bf16_nan, relative_error, to_bits, to_f32, values};
use davinci_kernels::emulated::{rms_norm_bwd, rms_norm_fwd, Bf16, Element};

mod common;

/// rows and columns: blocks of 32 to 512 threads (the launch gives a row's columns a thread
/// each, up to 512), rows longer than the block, and more rows than the weight gradient's
/// 64 row chunks.
const SHAPES: [(usize, usize); 6] = [(1, 1), (3, 33), (7, 100), (2, 1000), (9, 2049), (130, 40)];
const EPS: f32 = 1e-6;

/// Forward and backward in f64 from the given (already rounded) row values `s`.
struct Reference {
    y: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
}

fn reference(s: &[f32], w: &[f32], dy: &[f32], d_add: Option<&[f32]>, cols: usize) -> Reference {
    let rows = s.len() / cols;
    let (mut y, mut dx, mut dw) = (vec![0.0; s.len()], vec![0.0; s.len()], vec![0.0; cols]);
    for r in 0..rows {
        let row = &s[r * cols..(r + 1) * cols];
        let mean_sq = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (mean_sq + EPS as f64).sqrt();
        let mut dot = 0.0;
        for c in 0..cols {
            let n = row[c] as f64 * rstd;
            y[r * cols + c] = w[c] as f64 * n;
            dot += dy[r * cols + c] as f64 * w[c] as f64 * n;
            dw[c] += dy[r * cols + c] as f64 * n;
        }
        for c in 0..cols {
            let n = row[c] as f64 * rstd;
            let extra = d_add.map_or(0.0, |d| d[r * cols + c] as f64);
            dx[r * cols + c] = rstd * (dy[r * cols + c] as f64 * w[c] as f64 - n * dot / cols as f64) + extra;
        }
    }
    Reference { y, dx, dw }
}

/// f32 and bf16 through one test body.
trait Case: Element + PartialEq + std::fmt::Debug {
    const TOLERANCE: f64;
    fn make(v: &[f32]) -> Vec<Self>;
    fn read(v: &[Self]) -> Vec<f32>;
    fn nan() -> Self;
}

impl Case for f32 {
    const TOLERANCE: f64 = 1e-5;
    fn make(v: &[f32]) -> Vec<Self> {
        v.to_vec()
    }
    fn read(v: &[Self]) -> Vec<f32> {
        v.to_vec()
    }
    fn nan() -> Self {
        f32::NAN
    }
}

impl Case for Bf16 {
    const TOLERANCE: f64 = 1e-2;
    fn make(v: &[f32]) -> Vec<Self> {
        to_bits(v)
    }
    fn read(v: &[Self]) -> Vec<f32> {
        to_f32(v)
    }
    fn nan() -> Self {
        bf16_nan()
    }
}

fn check_against_reference<T: Case>(fused: bool, seed: u64) {
    for (rows, cols) in SHAPES {
        let n = rows * cols;
        let (x, w, dy) = (
            T::make(&values(n, seed, 2.0)),
            T::make(&values(cols, seed + 1, 2.0)),
            T::make(&values(n, seed + 2, 2.0)),
        );
        let (r, d_add) = (T::make(&values(n, seed + 3, 2.0)), T::make(&values(n, seed + 4, 1.0)));
        let mut y = vec![T::nan(); n];
        let mut sum = vec![T::nan(); n];
        rms_norm_fwd(&x, fused.then_some((r.as_slice(), sum.as_mut_slice())), &w, &mut y, EPS).unwrap();
        // The rows the norm saw: x, or x + r rounded to the dtype as transformers does.
        let s: Vec<f32> = if fused {
            let want: Vec<f32> =
                T::read(&x).iter().zip(T::read(&r)).map(|(a, b)| T::read(&T::make(&[a + b]))[0]).collect();
            assert_eq!(T::read(&sum), want, "{rows}x{cols}: the stored sum");
            want
        } else {
            T::read(&x)
        };
        let (mut dx, mut dw) = (vec![T::nan(); n], vec![T::nan(); cols]);
        let stored = T::make(&s);
        rms_norm_bwd(&stored, &w, &dy, fused.then_some(d_add.as_slice()), &mut dx, &mut dw, EPS).unwrap();
        let want =
            reference(&s, &T::read(&w), &T::read(&dy), fused.then(|| T::read(&d_add)).as_deref(), cols);
        for (what, got, expected) in
            [("y", T::read(&y), &want.y), ("dx", T::read(&dx), &want.dx), ("dw", T::read(&dw), &want.dw)]
        {
            let error = relative_error(&got, expected);
            assert!(error < T::TOLERANCE, "{rows}x{cols} (fused {fused}): {what} off by {error:e}");
        }
    }
}

#[test]
fn rms_norm_f32_matches_the_reference() {
    check_against_reference::<f32>(false, 1);
}

#[test]
fn rms_norm_bf16_matches_the_reference() {
    check_against_reference::<Bf16>(false, 11);
}

#[test]
fn fused_residual_add_and_rms_norm_match_the_reference() {
    check_against_reference::<f32>(true, 21);
    check_against_reference::<Bf16>(true, 31);
}
