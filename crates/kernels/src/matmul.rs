//! f32 matrix products over plain row-major slices on the CPU, for the fused paths that
//! keep their own buffers (the LM head's chunk loop): the same `gemm` crate that candle's
//! CPU matmul calls, without a fresh output tensor per product, and able to add into the
//! destination, so that a gradient summed over chunks is never copied.

use candle_core::{bail, Result};
use gemm::{gemm, Parallelism};

/// A row-major `[rows, cols]` matrix, or the transpose of one.
#[derive(Clone, Copy)]
pub struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl<'a> Matrix<'a> {
    /// `data` as `[rows, cols]`, row-major.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if data.len() != rows * cols {
            bail!("a [{rows}, {cols}] matrix needs {} values, not {}", rows * cols, data.len())
        }
        Ok(Self { data, rows, cols, transposed: false })
    }

    /// The transpose, `[cols, rows]`, reading the same values.
    pub fn t(self) -> Self {
        Self { transposed: !self.transposed, ..self }
    }

    /// `(rows, cols)` as the product sees it.
    fn shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// `(column stride, row stride)` in elements, as the product sees it.
    fn strides(&self) -> (isize, isize) {
        let row = self.cols as isize;
        if self.transposed {
            (row, 1)
        } else {
            (1, row)
        }
    }
}

/// `out = lhs · rhs`, or `out += lhs · rhs` with `accumulate`; `out` is row-major
/// `[lhs rows, rhs cols]`. Runs on rayon's threads.
pub fn matmul_into(out: &mut [f32], lhs: Matrix<'_>, rhs: Matrix<'_>, accumulate: bool) -> Result<()> {
    let ((m, k), (k2, n)) = (lhs.shape(), rhs.shape());
    if k != k2 || out.len() != m * n {
        bail!("matmul of [{m}, {k}] by [{k2}, {n}] into {} values", out.len())
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let ((lhs_cs, lhs_rs), (rhs_cs, rhs_rs)) = (lhs.strides(), rhs.strides());
    // SAFETY: the shapes were checked against the slices' lengths above, so every index
    // gemm forms from (m, n, k) and these strides lies inside `out`, `lhs.data` and
    // `rhs.data`; `out` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.data.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], (m, k): (usize, usize), b: &[f32], n: usize, a_t: bool, b_t: bool) -> Vec<f32> {
        let at = |i: usize, p: usize| if a_t { a[p * m + i] } else { a[i * k + p] };
        let bt = |p: usize, j: usize| if b_t { b[j * k + p] } else { b[p * n + j] };
        (0..m * n).map(|ij| (0..k).map(|p| at(ij / n, p) * bt(p, ij % n)).sum()).collect()
    }

    /// Every combination of transposes, written and accumulated, against the loops.
    #[test]
    fn products_of_plain_and_transposed_views_match_the_naive_loops() {
        let (m, k, n) = (37, 53, 29);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 13) % 11) as f32 / 5.0 - 1.0).collect();
        for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
            let lhs = if a_t { Matrix::new(&a, k, m).unwrap().t() } else { Matrix::new(&a, m, k).unwrap() };
            let rhs = if b_t { Matrix::new(&b, n, k).unwrap().t() } else { Matrix::new(&b, k, n).unwrap() };
            let expected = naive(&a, (m, k), &b, n, a_t, b_t);
            let mut out = vec![0.5f32; m * n];
            matmul_into(&mut out, lhs, rhs, false).unwrap();
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-4 * (1.0 + y.abs());
            assert!(out.iter().zip(&expected).all(|(&x, &y)| close(x, y)), "transposes {a_t} {b_t}");
            matmul_into(&mut out, lhs, rhs, true).unwrap();
            assert!(out.iter().zip(&expected).all(|(&x, &y)| close(x, 2.0 * y)), "accumulated, {a_t} {b_t}");
        }
        let err =
            matmul_into(&mut [0.0; 4], Matrix::new(&a, m, k).unwrap(), Matrix::new(&a, m, k).unwrap(), false);
        assert!(err.unwrap_err().to_string().contains("matmul of [37, 53] by [37, 53]"));
    }
}
