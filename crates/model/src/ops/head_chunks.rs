//! The chunk loop of [`super::linear_cross_entropy`] off the CPU, as candle tensor ops:
//! cuBLAS products and the loss rows kernels on a GPU. Nothing in it is device-specific,
//! so the tests below run it on the CPU (whose bf16 products also accumulate in f32 and
//! round the result to bf16, as cuBLAS's do).
//!
//! **Why bf16.** When the hidden states and the head weight are bf16 (the model runs in
//! bf16), the chunk's three products (`logits = h W^T`, `d_logits W`, `d_logits^T h`) stay
//! bf16 and run on tensor cores; in f32 they would run on the CUDA cores at a small
//! fraction of that rate (H100: 989 dense bf16 TFLOP/s against 67 f32), and at 32B with
//! Qwen's 152K vocabulary they are a large share of the step. Keeping the operands bf16
//! also spares the two f32 copies of them (3 GB for a 32B head weight).
//!
//! **What stays f32.** The products accumulate in f32 inside cuBLAS; the loss rows compute
//! in f32 from the bf16 logits and give each row's loss in f32; the losses are summed in
//! f64; each chunk's weight-gradient product is converted to f32 before it is added to the
//! sum over chunks, so the rounding does not grow with the number of chunks; both
//! gradients are returned in f32, as from the f32 path. What is bf16: the logits and
//! their gradient (8 significant bits, so a logit of size `L` is off by up to `L / 512`,
//! which moves a row's loss by about as much) and each chunk's products.

use candle_core::{DType, Tensor};
use davinci_kernels::ops::cross_entropy_rows;

use crate::error::Result;

/// The dtype the chunk loop computes in for hidden states and a head weight of these
/// dtypes: bf16 when both are, f32 otherwise.
pub(super) fn chunk_dtype(hidden: DType, weight: DType) -> DType {
    if hidden == DType::BF16 && weight == DType::BF16 {
        DType::BF16
    } else {
        DType::F32
    }
}

/// The loss sum and, with `with_grads`, the gradients `(d_hidden, d_weight)`, both f32.
/// `hidden` `[tokens, H]` and `weight` `[V, H]` are of one dtype (f32 or bf16) on one
/// device; `counted` are the rows with a label, `targets` their labels.
pub(super) fn linear_cross_entropy_chunks(
    hidden: &Tensor,
    weight: &Tensor,
    counted: &[u32],
    targets: &[u32],
    chunk: usize,
    with_grads: bool,
) -> Result<(f64, Option<(Tensor, Tensor)>)> {
    let device = hidden.device();
    let (tokens, width) = hidden.dims2()?;
    let vocab = weight.dim(0)?;
    // Summed on the device: reading each chunk's sum back would wait for the GPU every chunk.
    let mut loss_sum = Tensor::zeros((), DType::F64, device)?;
    let mut d_rows = Vec::new();
    let mut d_weight = with_grads.then(|| Tensor::zeros((vocab, width), DType::F32, device)).transpose()?;
    for (rows, row_targets) in counted.chunks(chunk).zip(targets.chunks(chunk)) {
        let rows = Tensor::new(rows, device)?;
        let h = hidden.index_select(&rows, 0)?;
        let logits = h.matmul(&weight.t()?)?;
        let per_row = cross_entropy_rows(&logits, &Tensor::new(row_targets, device)?, with_grads)?;
        drop(logits);
        loss_sum = (loss_sum + per_row.loss.to_dtype(DType::F64)?.sum_all()?)?;
        if let (Some(d_weight), Some(d_logits)) = (d_weight.as_mut(), per_row.d_logits) {
            d_rows.push(d_logits.matmul(weight)?);
            // In its own statement, so the bf16 product is freed before the sum is replaced.
            let product = d_logits.t()?.matmul(&h)?.to_dtype(DType::F32)?;
            *d_weight = (&*d_weight + product)?;
        }
    }
    let loss_sum = loss_sum.to_scalar::<f64>()?;
    let Some(d_weight) = d_weight else { return Ok((loss_sum, None)) };
    let mut d_hidden = Tensor::zeros((tokens, width), DType::F32, device)?;
    if !counted.is_empty() {
        let rows = Tensor::new(counted, device)?;
        d_hidden = d_hidden.index_add(&rows, &Tensor::cat(&d_rows, 0)?.to_dtype(DType::F32)?, 0)?;
    }
    Ok((loss_sum, Some((d_hidden, d_weight))))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use davinci_kernels::inputs::values;

    use super::linear_cross_entropy_chunks;
    use crate::ops::head_cpu::linear_cross_entropy_cpu;

    const TOKENS: usize = 37;
    const WIDTH: usize = 96;
    const VOCAB: usize = 1003;
    /// Tokens per chunk: 4 chunks and a part, so the weight gradient is summed over chunks.
    const CHUNK: usize = 8;

    /// Hidden states and a head weight whose values bf16 holds exactly (so both dtypes get
    /// the same inputs), logits of a few units; every fifth token is not counted.
    fn inputs() -> (Tensor, Tensor, Vec<u32>, Vec<u32>) {
        let exact = |n, seed, range| {
            let v: Vec<f32> = values(n, seed, range);
            Tensor::from_vec(v, n, &Device::Cpu).and_then(|t| t.to_dtype(DType::BF16)?.to_dtype(DType::F32))
        };
        let hidden = exact(TOKENS * WIDTH, 1, 2.0).and_then(|t| t.reshape((TOKENS, WIDTH))).unwrap();
        let weight = exact(VOCAB * WIDTH, 2, 0.3).and_then(|t| t.reshape((VOCAB, WIDTH))).unwrap();
        let counted: Vec<u32> = (0..TOKENS as u32).filter(|t| t % 5 != 3).collect();
        let targets =
            counted.iter().map(|&t| [0, VOCAB as u32 - 1, t * 97 % VOCAB as u32][t as usize % 3]).collect();
        (hidden, weight, counted, targets)
    }

    /// ||got - want|| / ||want||.
    fn relative(got: &Tensor, want: &Tensor) -> f64 {
        let diff = (got.to_dtype(DType::F64).unwrap() - want.to_dtype(DType::F64).unwrap()).unwrap();
        let norm = |t: &Tensor| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt();
        norm(&diff) / norm(&want.to_dtype(DType::F64).unwrap())
    }

    /// The f32 tensor path gives the CPU head's results: the same arithmetic in another
    /// order (candle's products against the CPU head's own).
    #[test]
    fn the_chunk_loop_in_f32_matches_the_cpu_head() {
        let (hidden, weight, counted, targets) = inputs();
        let (loss, grads) =
            linear_cross_entropy_chunks(&hidden, &weight, &counted, &targets, CHUNK, true).unwrap();
        let (want_loss, want) =
            linear_cross_entropy_cpu(&hidden, &weight, &counted, &targets, CHUNK, true).unwrap();
        let ((d_hidden, d_weight), (want_hidden, want_weight)) = (grads.unwrap(), want.unwrap());
        assert!((loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "loss {loss} against {want_loss}");
        assert_eq!((d_hidden.dtype(), d_weight.dtype()), (DType::F32, DType::F32));
        let (e_hidden, e_weight) = (relative(&d_hidden, &want_hidden), relative(&d_weight, &want_weight));
        assert!(e_hidden < 1e-5 && e_weight < 1e-5, "d_hidden off by {e_hidden:e}, d_weight by {e_weight:e}");
        let (alone, none) =
            linear_cross_entropy_chunks(&hidden, &weight, &counted, &targets, CHUNK, false).unwrap();
        assert!(none.is_none());
        assert!(
            (alone - loss).abs() <= 1e-12 * loss.abs(),
            "the loss without gradients: {alone} against {loss}"
        );
    }

    /// bf16 inputs stay bf16 through the products and the loss rows, and the results
    /// match the f32 path's within bf16's precision. The logits are rounded to 8
    /// significant bits (a logit of size L off by up to L / 512, here L up to about 5:
    /// about 0.01), so the mean loss is held to 1e-3 relative (the rows' errors average
    /// out; 2e-4 measured) and the gradients, through bf16 logits, their bf16 gradient and
    /// bf16 products (each rounding up to 2^-9 relative), to 1e-2 in norm (2.5e-3
    /// measured). The gradients keep the f32 path's dtypes.
    #[test]
    fn the_chunk_loop_in_bf16_matches_f32_within_bf16_precision() {
        let (hidden, weight, counted, targets) = inputs();
        let (want_loss, want) =
            linear_cross_entropy_chunks(&hidden, &weight, &counted, &targets, CHUNK, true).unwrap();
        let (hidden, weight) = (hidden.to_dtype(DType::BF16).unwrap(), weight.to_dtype(DType::BF16).unwrap());
        let (loss, grads) =
            linear_cross_entropy_chunks(&hidden, &weight, &counted, &targets, CHUNK, true).unwrap();
        let ((d_hidden, d_weight), (want_hidden, want_weight)) = (grads.unwrap(), want.unwrap());
        assert_eq!((d_hidden.dtype(), d_weight.dtype()), (DType::F32, DType::F32));
        assert_eq!((d_hidden.dims(), d_weight.dims()), (want_hidden.dims(), want_weight.dims()));
        let e_loss = (loss - want_loss).abs() / want_loss.abs();
        let (e_hidden, e_weight) = (relative(&d_hidden, &want_hidden), relative(&d_weight, &want_weight));
        assert!(e_loss < 1e-3, "loss {loss} against {want_loss}");
        assert!(e_hidden < 1e-2 && e_weight < 1e-2, "d_hidden off by {e_hidden:e}, d_weight by {e_weight:e}");
        // Rows without a label get no gradient.
        let ignored = d_hidden.get(3).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(ignored, 0.0);
    }
}
