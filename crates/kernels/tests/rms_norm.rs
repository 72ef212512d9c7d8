//! The RMSNorm kernels, run under the emulation of the CUDA execution model, against a
//! plain f64 reference: awkward sizes (one column, a single row, columns not a multiple of
//! the block, more columns than threads), f32 and bf16. Outputs are poisoned with NaN
//! first, so an element the kernel never writes fails.

use common::{bf16_nan, relative_error, to_bits, to_f32, values};
use davinci_kernels::emulated::{rms_norm_bwd, rms_norm_fwd};

mod common;

/// rows, columns, threads per block, row chunks of the weight gradient.
const SHAPES: [(usize, usize, usize, usize); 5] =
    [(1, 1, 32, 1), (3, 33, 32, 2), (7, 100, 64, 3), (2, 1000, 128, 1), (9, 2049, 256, 4)];
const EPS: f32 = 1e-6;

/// Forward and backward in f64 from the given (already rounded) inputs.
struct Reference {
    y: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
}

fn reference(x: &[f32], w: &[f32], dy: &[f32], cols: usize) -> Reference {
    let rows = x.len() / cols;
    let (mut y, mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; x.len()], vec![0.0; cols]);
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
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
            dx[r * cols + c] = rstd * (dy[r * cols + c] as f64 * w[c] as f64 - n * dot / cols as f64);
        }
    }
    Reference { y, dx, dw }
}

#[test]
fn rms_norm_f32_matches_the_reference() {
    for (rows, cols, threads, chunks) in SHAPES {
        let (x, w, dy) = (values(rows * cols, 1, 2.0), values(cols, 2, 2.0), values(rows * cols, 3, 2.0));
        let mut y = vec![f32::NAN; rows * cols];
        rms_norm_fwd(&x, &w, &mut y, cols, EPS, threads);
        let (mut dx, mut dw) = (vec![f32::NAN; rows * cols], vec![f32::NAN; cols]);
        rms_norm_bwd(&x, &w, &dy, &mut dx, &mut dw, cols, EPS, threads, chunks);
        let want = reference(&x, &w, &dy, cols);
        for (what, got, expected) in [("y", &y, &want.y), ("dx", &dx, &want.dx), ("dw", &dw, &want.dw)] {
            let error = relative_error(got, expected);
            assert!(error < 1e-5, "f32 {rows}x{cols} ({threads} threads): {what} off by {error:e}");
        }
    }
}

#[test]
fn rms_norm_bf16_matches_the_reference() {
    let nan = bf16_nan();
    for (rows, cols, threads, chunks) in SHAPES {
        let (x, w, dy) = (
            to_bits(&values(rows * cols, 4, 2.0)),
            to_bits(&values(cols, 5, 2.0)),
            to_bits(&values(rows * cols, 6, 2.0)),
        );
        let mut y = vec![nan; rows * cols];
        rms_norm_fwd(&x, &w, &mut y, cols, EPS, threads);
        let (mut dx, mut dw) = (vec![nan; rows * cols], vec![nan; cols]);
        rms_norm_bwd(&x, &w, &dy, &mut dx, &mut dw, cols, EPS, threads, chunks);
        let want = reference(&to_f32(&x), &to_f32(&w), &to_f32(&dy), cols);
        for (what, got, expected) in
            [("y", to_f32(&y), &want.y), ("dx", to_f32(&dx), &want.dx), ("dw", to_f32(&dw), &want.dw)]
        {
            let error = relative_error(&got, expected);
            assert!(error < 1e-2, "bf16 {rows}x{cols} ({threads} threads): {what} off by {error:e}");
        }
    }
}
