//! The per-row cross-entropy kernels under the emulation against an f64 reference, and the
//! CPU op the model uses against the same reference, with f32 and bf16 logits: vocabularies
//! that are not a multiple of the block or of a 16-byte pack (1, 33, 1000, 5003), rows
//! starting off a 16-byte boundary, targets at both ends, rows of very different scales,
//! gradients poisoned first; and the loss alone when no gradient is asked for.
//!
//! Tolerances: the loss within 1e-5 (relative above 1, absolute below) in either dtype, as
//! it is computed in f32 from the logits as stored; the gradient within 1e-6 in f32, and in
//! bf16 within its rounding to bf16 (half an ulp, 2^-8 relative) plus 1e-6.

use candle_core::{DType, Device, Tensor};
use common::{to_bits, to_f32, values};
use davinci_kernels::emulated::{cross_entropy_rows, Bf16, Element};

mod common;

/// Per-row loss and softmax - one_hot, in f64.
fn reference(logits: &[f32], targets: &[u32], vocab: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut loss, mut grad) = (Vec::new(), Vec::new());
    for (r, &t) in targets.iter().enumerate() {
        let x = &logits[r * vocab..(r + 1) * vocab];
        let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        loss.push(lse - x[t as usize] as f64);
        grad.extend(
            x.iter().enumerate().map(|(c, &v)| (v as f64 - lse).exp() - (c == t as usize) as u8 as f64),
        );
    }
    (loss, grad)
}

fn case(rows: usize, vocab: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    // Row r is scaled by 1 + 10 r, so some rows are nearly one-hot and some nearly flat.
    let mut logits = values(rows * vocab, seed, 1.0);
    for (r, row) in logits.chunks_mut(vocab).enumerate() {
        row.iter_mut().for_each(|v| *v *= 1.0 + 10.0 * r as f32);
    }
    let targets = (0..rows).map(|r| [0, vocab - 1, vocab / 2][r % 3] as u32).collect();
    (logits, targets)
}

fn max_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(got.iter().all(|v| v.is_finite()), "a non-finite output (an element left unwritten?)");
    got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max)
}

/// rows and vocabulary
const SHAPES: [(usize, usize); 4] = [(1, 1), (3, 33), (4, 1000), (5, 5003)];

/// Whether `got` is within the gradient's tolerance of `want` everywhere: 1e-6 (relative
/// above 1) in f32; in bf16, the rounding of the f32 result to bf16 as well.
fn check_grad(what: &str, bf16: bool, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    let tolerance = |w: f64| if bf16 { w.abs() / 256.0 + 1e-6 } else { 1e-6 * w.abs().max(1.0) };
    let worst = got
        .iter()
        .zip(want)
        .enumerate()
        .find(|(_, (&g, &w))| (g as f64 - w).abs().is_nan() || (g as f64 - w).abs() > tolerance(w));
    if let Some((i, (g, w))) = worst {
        panic!("{what}: gradient {i} is {g}, the reference {w} (a NaN: an element left unwritten?)");
    }
}

/// Logits in a kernel dtype: f32 as they are, or rounded to bf16 (the values the reference
/// then gets, so that only the kernels' arithmetic is measured).
trait Logits: Element {
    const BF16: bool;
    const NAN: Self;
    fn store(v: &[f32]) -> Vec<Self>;
    fn load(v: &[Self]) -> Vec<f32>;
}

impl Logits for f32 {
    const BF16: bool = false;
    const NAN: Self = f32::NAN;
    fn store(v: &[f32]) -> Vec<Self> {
        v.to_vec()
    }
    fn load(v: &[Self]) -> Vec<f32> {
        v.to_vec()
    }
}

impl Logits for Bf16 {
    const BF16: bool = true;
    const NAN: Self = 0x7fc0;
    fn store(v: &[f32]) -> Vec<Self> {
        to_bits(v)
    }
    fn load(v: &[Self]) -> Vec<f32> {
        to_f32(v)
    }
}

/// The kernels on `logits` stored as `T`, `skip` elements into their buffer, with the
/// gradient `d_skip` elements into its own (so a row's 16-byte packs of the one and of the
/// other need not line up), against the reference; then the loss alone. Returns the
/// gradient.
fn kernel_case<T: Logits>(
    logits: &[f32],
    targets: &[u32],
    vocab: usize,
    (skip, d_skip): (usize, usize),
) -> Vec<f32> {
    let rows = targets.len();
    let what = format!("{rows}x{vocab}, bf16 {}, skips {skip} and {d_skip}", T::BF16);
    let mut buffer = vec![T::NAN; skip];
    buffer.extend(T::store(logits));
    let stored = &buffer[skip..];
    let (want_loss, want_grad) = reference(&T::load(stored), targets, vocab);
    let (mut loss, mut grad) = (vec![f32::NAN; rows], vec![T::NAN; d_skip + rows * vocab]);
    cross_entropy_rows(stored, targets, Some(&mut grad[d_skip..]), &mut loss, vocab).unwrap();
    let e_loss = max_error(&loss, &want_loss);
    assert!(e_loss < 1e-5, "{what}: loss off by {e_loss:e}");
    let grad = T::load(&grad[d_skip..]);
    check_grad(&what, T::BF16, &grad, &want_grad);
    let mut loss_only = vec![f32::NAN; rows];
    cross_entropy_rows(stored, targets, None, &mut loss_only, vocab).unwrap();
    assert_eq!(loss_only, loss, "{what}: the loss without the gradient");
    grad
}

#[test]
fn cross_entropy_kernels_match_the_reference() {
    for (rows, vocab) in SHAPES {
        let (logits, targets) = case(rows, vocab, rows as u64);
        kernel_case::<f32>(&logits, &targets, vocab, (0, 0));
        kernel_case::<Bf16>(&logits, &targets, vocab, (0, 0));
    }
}

/// Rows that start anywhere relative to a 16-byte boundary: the logits' buffer itself off
/// by elements, and a gradient whose packs do not line up with the logits' (its
/// element-at-a-time path) or line up again (off by a whole pack).
#[test]
fn cross_entropy_kernels_on_buffers_off_a_16_byte_boundary() {
    for (rows, vocab) in [(3, 33), (2, 1000), (3, 5003), (2, 3)] {
        let (logits, targets) = case(rows, vocab, 11 + rows as u64);
        for skips in [(1, 0), (0, 1), (1, 1), (3, 6), (4, 0), (8, 0)] {
            kernel_case::<f32>(&logits, &targets, vocab, skips);
            kernel_case::<Bf16>(&logits, &targets, vocab, skips);
        }
    }
}

#[test]
fn cross_entropy_cpu_op_matches_the_reference() {
    for (rows, vocab) in SHAPES {
        let (logits, targets) = case(rows, vocab, 7 + rows as u64);
        let t_targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let what = format!("{rows}x{vocab} {dtype:?}");
            let t_logits = Tensor::from_vec(logits.clone(), (rows, vocab), &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .unwrap();
            let stored =
                t_logits.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (want_loss, want_grad) = reference(&stored, &targets, vocab);
            let out = davinci_kernels::ops::cross_entropy_rows(&t_logits, &t_targets, true).unwrap();
            let loss = out.loss.to_vec1::<f32>().unwrap();
            let d_logits = out.d_logits.unwrap();
            assert_eq!((d_logits.dtype(), d_logits.dims()), (dtype, &[rows, vocab][..]), "{what}");
            let grad =
                d_logits.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let e_loss = max_error(&loss, &want_loss);
            assert!(e_loss < 1e-5, "{what}: loss off by {e_loss:e}");
            check_grad(&what, dtype == DType::BF16, &grad, &want_grad);
            let alone = davinci_kernels::ops::cross_entropy_rows(&t_logits, &t_targets, false).unwrap();
            assert_eq!(alone.loss.to_vec1::<f32>().unwrap(), loss, "{what}");
            assert!(alone.d_logits.is_none());
        }
    }
    let bad = Tensor::new(&[5u32], &Device::Cpu).unwrap();
    let logits = Tensor::zeros((1, 5), DType::F32, &Device::Cpu).unwrap();
    let err = davinci_kernels::ops::cross_entropy_rows(&logits, &bad, true).unwrap_err().to_string();
    assert!(err.contains("target 5 outside a vocabulary of 5"), "{err}");
    let logits = Tensor::zeros((1, 5), DType::F16, &Device::Cpu).unwrap();
    let err = davinci_kernels::ops::cross_entropy_rows(&logits, &bad, true).unwrap_err().to_string();
    assert!(err.contains("f32 or bf16"), "{err}");
}

/// Qwen's vocabulary of 151,936 with masked entries: -inf at every seventh id and at the
/// first 512 (so each thread's first logits are -inf, where a running max of -inf once made
/// exp(-inf - -inf) a NaN). Masked ids get probability 0 and the rest match the reference,
/// in f32 and in bf16.
#[test]
fn cross_entropy_over_qwens_vocabulary_with_minus_infinity_logits() {
    let (rows, vocab) = (3, 151_936);
    let mut logits = values(rows * vocab, 5, 8.0);
    for row in logits.chunks_mut(vocab) {
        for (c, v) in row.iter_mut().enumerate() {
            if c < 512 || c % 7 == 0 {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    let targets = vec![513, 151_934, 70_001];
    let masked = |i: usize| i % vocab < 512 || (i % vocab).is_multiple_of(7);
    for grad in [
        kernel_case::<f32>(&logits, &targets, vocab, (0, 0)),
        kernel_case::<Bf16>(&logits, &targets, vocab, (0, 0)),
    ] {
        assert!(grad.iter().enumerate().all(|(i, &g)| !masked(i) || g == 0.0), "a masked id got probability");
    }
}

/// A chunk with no counted rows (all its labels -100 are dropped before the kernel)
/// launches nothing and writes nothing.
#[test]
fn a_chunk_without_counted_rows_launches_nothing() {
    let mut loss: Vec<f32> = Vec::new();
    davinci_kernels::emulated::launches_ran();
    cross_entropy_rows::<f32>(&[], &[], None, &mut loss, 151_936).unwrap();
    assert!(davinci_kernels::emulated::launches_ran().is_empty());
}
