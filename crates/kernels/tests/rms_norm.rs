//! The RMSNorm kernels, run under the emulation of the CUDA execution model, against a
//! plain f64 reference: awkward sizes (one column, a single row, columns not a multiple of
//! the block, more columns than threads), f32 and bf16, plain and fused with the residual
//! add; each with its buffers aligned for the 16-byte kernels and again one element off, for
//! their scalar twins. Outputs are poisoned with NaN first, so an element the kernel never
//! writes fails.

use common::{bf16_nan, kernels_ran, relative_error, to_bits, to_f32, values, Placed};
use davinci_kernels::emulated::{rms_norm_bwd, rms_norm_fwd, Bf16, Element};

mod common;

/// rows and columns: for the scalar kernels, blocks of 32 to 512 threads (a thread a column
/// up to 512) and rows longer than the block; for the vector kernels (columns a multiple of
/// 8 for bf16, 4 for f32), several rows a block with a row count not a multiple of them
/// (7x100 in f32, 5x896 and 130x40), 512 threads at 8192 columns, and rows too long to
/// keep in registers (8200: the scalar kernels); more rows than the weight gradient's 64
/// row chunks.
const SHAPES: [(usize, usize); 9] =
    [(1, 1), (3, 33), (7, 100), (2, 1000), (9, 2049), (130, 40), (5, 896), (3, 8192), (2, 8200)];
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
trait Case: Element + PartialEq + std::fmt::Debug + Copy + Default {
    const TOLERANCE: f64;
    /// Elements in a 16-byte access.
    const PACK: usize;
    const SUFFIX: &str;
    fn make(v: &[f32]) -> Vec<Self>;
    fn read(v: &[Self]) -> Vec<f32>;
    fn nan() -> Self;
}

impl Case for f32 {
    const TOLERANCE: f64 = 1e-5;
    const PACK: usize = 4;
    const SUFFIX: &str = "f32";
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
    const PACK: usize = 8;
    const SUFFIX: &str = "bf16";
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

/// `misalign`: every buffer that many elements past a 16-byte boundary.
fn check_against_reference<T: Case>(fused: bool, seed: u64, misalign: usize) {
    for (rows, cols) in SHAPES {
        let n = rows * cols;
        let place = |v: Vec<T>| Placed::new(&v, misalign);
        let (x, w, dy) = (
            place(T::make(&values(n, seed, 2.0))),
            place(T::make(&values(cols, seed + 1, 2.0))),
            place(T::make(&values(n, seed + 2, 2.0))),
        );
        let (r, d_add) =
            (place(T::make(&values(n, seed + 3, 2.0))), place(T::make(&values(n, seed + 4, 1.0))));
        let (mut y, mut sum) = (place(vec![T::nan(); n]), place(vec![T::nan(); n]));
        kernels_ran();
        rms_norm_fwd(x.get(), fused.then_some((r.get(), sum.get_mut())), w.get(), y.get_mut(), EPS).unwrap();
        // The rows the norm saw: x, or x + r rounded to the dtype as transformers does.
        let s: Vec<f32> = if fused {
            let want: Vec<f32> = T::read(x.get())
                .iter()
                .zip(T::read(r.get()))
                .map(|(a, b)| T::read(&T::make(&[a + b]))[0])
                .collect();
            assert_eq!(T::read(sum.get()), want, "{rows}x{cols}: the stored sum");
            want
        } else {
            T::read(x.get())
        };
        let (mut dx, mut dw) = (place(vec![T::nan(); n]), place(vec![T::nan(); cols]));
        let stored = place(T::make(&s));
        let d_add = fused.then_some(d_add.get());
        rms_norm_bwd(stored.get(), w.get(), dy.get(), d_add, dx.get_mut(), dw.get_mut(), EPS).unwrap();
        // The 16-byte kernels where the buffers and the shape allow them.
        let vector = misalign == 0 && cols.is_multiple_of(T::PACK);
        let [rows_kernel, columns_kernel] = [vector && cols <= 8192, vector].map(|v| {
            if v {
                T::SUFFIX.to_string()
            } else {
                format!("scalar_{}", T::SUFFIX)
            }
        });
        let expected: Vec<String> = ["fwd", "bwd_dx"]
            .map(|k| format!("rms_norm_{k}_{rows_kernel}"))
            .into_iter()
            .chain(["bwd_dw_partial", "bwd_dw_sum"].map(|k| format!("rms_norm_{k}_{columns_kernel}")))
            .collect();
        assert_eq!(kernels_ran(), expected, "{rows}x{cols}, {misalign} off");
        let want =
            reference(&s, &T::read(w.get()), &T::read(dy.get()), d_add.map(|d| T::read(d)).as_deref(), cols);
        for (what, got, expected) in [
            ("y", T::read(y.get()), &want.y),
            ("dx", T::read(dx.get()), &want.dx),
            ("dw", T::read(dw.get()), &want.dw),
        ] {
            let error = relative_error(&got, expected);
            assert!(
                error < T::TOLERANCE,
                "{rows}x{cols} (fused {fused}, {misalign} off): {what} off by {error:e}"
            );
        }
    }
}

#[test]
fn rms_norm_f32_matches_the_reference() {
    check_against_reference::<f32>(false, 1, 0);
    check_against_reference::<f32>(false, 1, 1);
}

#[test]
fn rms_norm_bf16_matches_the_reference() {
    check_against_reference::<Bf16>(false, 11, 0);
    check_against_reference::<Bf16>(false, 11, 3);
}

#[test]
fn fused_residual_add_and_rms_norm_match_the_reference() {
    check_against_reference::<f32>(true, 21, 0);
    check_against_reference::<Bf16>(true, 31, 0);
    check_against_reference::<f32>(true, 21, 2);
    check_against_reference::<Bf16>(true, 31, 1);
}
