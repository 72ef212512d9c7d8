//! The per-row cross-entropy kernel under the emulation against an f64 reference, and the
//! CPU op the model uses against the same reference: vocabularies that are not a multiple
//! of the block (1, 33, 1000, 5003), targets at both ends, rows of very different scales,
//! gradients poisoned first; and the loss alone when no gradient is asked for.

use candle_core::{Device, Tensor};
use common::values;
use davinci_kernels::emulated::cross_entropy_rows;

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

#[test]
fn cross_entropy_kernel_matches_the_reference() {
    for (rows, vocab) in SHAPES {
        let (logits, targets) = case(rows, vocab, rows as u64);
        let (want_loss, want_grad) = reference(&logits, &targets, vocab);
        let (mut loss, mut grad) = (vec![f32::NAN; rows], vec![f32::NAN; rows * vocab]);
        cross_entropy_rows(&logits, &targets, Some(&mut grad), &mut loss, vocab).unwrap();
        let (e_loss, e_grad) = (max_error(&loss, &want_loss), max_error(&grad, &want_grad));
        assert!(
            e_loss < 1e-5 && e_grad < 1e-6,
            "{rows}x{vocab}: loss off by {e_loss:e}, gradient by {e_grad:e}"
        );
        let mut loss_only = vec![f32::NAN; rows];
        cross_entropy_rows(&logits, &targets, None, &mut loss_only, vocab).unwrap();
        assert_eq!(loss_only, loss, "{rows}x{vocab}: the loss without the gradient");
    }
}

#[test]
fn cross_entropy_cpu_op_matches_the_reference() {
    for (rows, vocab) in SHAPES {
        let (logits, targets) = case(rows, vocab, 7 + rows as u64);
        let (want_loss, want_grad) = reference(&logits, &targets, vocab);
        let t_logits = Tensor::from_vec(logits, (rows, vocab), &Device::Cpu).unwrap();
        let t_targets = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
        let out = davinci_kernels::ops::cross_entropy_rows(&t_logits, &t_targets, true).unwrap();
        let loss = out.loss.to_vec1::<f32>().unwrap();
        let grad = out.d_logits.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (e_loss, e_grad) = (max_error(&loss, &want_loss), max_error(&grad, &want_grad));
        assert!(
            e_loss < 1e-5 && e_grad < 1e-6,
            "{rows}x{vocab}: loss off by {e_loss:e}, gradient by {e_grad:e}"
        );
        let alone = davinci_kernels::ops::cross_entropy_rows(&t_logits, &t_targets, false).unwrap();
        assert_eq!(alone.loss.to_vec1::<f32>().unwrap(), loss);
        assert!(alone.d_logits.is_none());
    }
    let bad = Tensor::new(&[5u32], &Device::Cpu).unwrap();
    let logits = Tensor::zeros((1, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = davinci_kernels::ops::cross_entropy_rows(&logits, &bad, true).unwrap_err().to_string();
    assert!(err.contains("target 5 outside a vocabulary of 5"), "{err}");
}

/// Qwen's vocabulary of 151,936 with masked entries: -inf at every seventh id and at the
/// first 512 (so each thread's first logits are -inf, where a running max of -inf once made
/// exp(-inf - -inf) a NaN). Masked ids get probability 0 and the rest match the reference.
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
    let (want_loss, want_grad) = reference(&logits, &targets, vocab);
    let (mut loss, mut grad) = (vec![f32::NAN; rows], vec![f32::NAN; rows * vocab]);
    cross_entropy_rows(&logits, &targets, Some(&mut grad), &mut loss, vocab).unwrap();
    let (e_loss, e_grad) = (max_error(&loss, &want_loss), max_error(&grad, &want_grad));
    assert!(e_loss < 1e-5 && e_grad < 1e-6, "loss off by {e_loss:e}, gradient by {e_grad:e}");
    let masked = grad.iter().enumerate().filter(|(i, _)| i % vocab < 512 || (i % vocab) % 7 == 0);
    assert!(masked.clone().all(|(_, &g)| g == 0.0), "a masked id got probability");
}

/// A chunk with no counted rows (all its labels -100 are dropped before the kernel)
/// launches nothing and writes nothing.
#[test]
fn a_chunk_without_counted_rows_launches_nothing() {
    let mut loss: Vec<f32> = Vec::new();
    davinci_kernels::emulated::launches_ran();
    cross_entropy_rows(&[], &[], None, &mut loss, 151_936).unwrap();
    assert!(davinci_kernels::emulated::launches_ran().is_empty());
}
