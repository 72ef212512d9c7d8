//! The chunk loop of [`super::linear_cross_entropy`] on the CPU, over plain buffers: one
//! logits buffer for every chunk, overwritten in place by the logits' gradient, and the
//! head weight's gradient added into one buffer by the product itself. The tensor version
//! allocates each chunk's logits, their gradient and two weight-sized sums afresh (about
//! 1.6 GB a chunk at Qwen's 152K vocabulary), which on a CPU costs page faults and memory
//! passes comparable to the products.

use candle_core::Tensor;
use davinci_kernels::matmul::{matmul_into, Matrix};
use davinci_kernels::ops::{cpu_storage_slice, cross_entropy_rows_in_place};

use crate::error::Result;

const NAME: &str = "CPU LM head";

/// The loss sum and, with `with_grads`, the gradients `(d_hidden, d_weight)` as the
/// tensor version computes them. `hidden` `[tokens, H]` and `weight` `[V, H]` are f32 on
/// the CPU; `counted` are the rows with a label, `targets` their labels.
pub(super) fn linear_cross_entropy_cpu(
    hidden: &Tensor,
    weight: &Tensor,
    counted: &[u32],
    targets: &[u32],
    chunk: usize,
    with_grads: bool,
) -> Result<(f64, Option<(Tensor, Tensor)>)> {
    let (tokens, width) = hidden.dims2()?;
    let vocab = weight.dim(0)?;
    let hidden = hidden.contiguous()?;
    let weight = weight.contiguous()?;
    let (h_storage, h_layout) = hidden.storage_and_layout();
    let (w_storage, w_layout) = weight.storage_and_layout();
    let h = cpu_storage_slice::<f32>(NAME, &h_storage, h_layout)?;
    let w = cpu_storage_slice::<f32>(NAME, &w_storage, w_layout)?;

    let chunk = chunk.min(counted.len()).max(1);
    let mut logits = vec![0f32; chunk * vocab];
    let mut rows = vec![0f32; chunk * width];
    let mut d_rows = vec![0f32; if with_grads { chunk * width } else { 0 }];
    let mut d_hidden = vec![0f32; if with_grads { tokens * width } else { 0 }];
    let mut d_weight = vec![0f32; if with_grads { vocab * width } else { 0 }];
    let mut loss_sum = 0f64;
    for (i, (chunk_rows, chunk_targets)) in counted.chunks(chunk).zip(targets.chunks(chunk)).enumerate() {
        let n = chunk_rows.len();
        let (rows, logits) = (&mut rows[..n * width], &mut logits[..n * vocab]);
        for (row, &t) in rows.chunks_mut(width).zip(chunk_rows) {
            row.copy_from_slice(&h[t as usize * width..(t as usize + 1) * width]);
        }
        let weight = Matrix::new(w, vocab, width)?;
        matmul_into(logits, Matrix::new(rows, n, width)?, weight.t(), false)?;
        let losses = cross_entropy_rows_in_place(logits, chunk_targets, with_grads)?;
        loss_sum += losses.iter().map(|&l| f64::from(l)).sum::<f64>();
        if with_grads {
            let d_logits = Matrix::new(logits, n, vocab)?;
            let d_rows = &mut d_rows[..n * width];
            matmul_into(d_rows, d_logits, weight, false)?;
            for (d_row, &t) in d_rows.chunks(width).zip(chunk_rows) {
                d_hidden[t as usize * width..(t as usize + 1) * width].copy_from_slice(d_row);
            }
            matmul_into(&mut d_weight, d_logits.t(), Matrix::new(rows, n, width)?, i > 0)?;
        }
    }
    drop((h_storage, w_storage));
    let grads = if with_grads {
        let device = hidden.device();
        Some((
            Tensor::from_vec(d_hidden, (tokens, width), device)?,
            Tensor::from_vec(d_weight, (vocab, width), device)?,
        ))
    } else {
        None
    };
    Ok((loss_sum, grads))
}
