//! The sum of squares of a tensor in f64: the gradient norm's reduction. On the CPU it is
//! one pass over the f32 values, in fixed chunks whose partial sums are added in chunk
//! order, so the result does not depend on how rayon shares the chunks out; elsewhere (and
//! for other dtypes) candle's ops, which convert and square in full-size temporaries.

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use super::cpu_storage_slice;

/// Values one partial sum covers.
const CHUNK_LEN: usize = 1 << 16;

/// `sum(x²)` over every element of `x`, as a `[1]` f64 tensor on `x`'s device.
pub fn sum_of_squares(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let values = cpu_storage_slice::<f32>("sum of squares", &storage, layout)?;
        let total: f64 = chunked_sum_of_squares(values).into_iter().sum();
        return Tensor::new(&[total], &Device::Cpu);
    }
    x.flatten_all()?.to_dtype(DType::F64)?.sqr()?.sum_keepdim(0)
}

/// The partial sums of `x²` of each chunk, in order.
fn chunked_sum_of_squares(values: &[f32]) -> Vec<f64> {
    values
        .par_chunks(CHUNK_LEN)
        .map(|chunk| chunk.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several chunks, against the f64 sum written out, and against candle's own ops.
    #[test]
    fn the_cpu_sum_of_squares_matches_the_plain_f64_sum_over_several_chunks() {
        let values: Vec<f32> =
            (0..17 * (3 * CHUNK_LEN / 17 + 2)).map(|i| ((i * 7919) % 1000) as f32 / 300.0 - 1.5).collect();
        let expected: f64 = values.iter().map(|&v| f64::from(v).powi(2)).sum();
        let x = Tensor::from_slice(&values, (values.len() / 17, 17), &Device::Cpu).unwrap();
        let got = sum_of_squares(&x).unwrap().to_vec1::<f64>().unwrap()[0];
        assert!((got - expected).abs() <= 1e-12 * expected, "{got} vs {expected}");
        let strided = sum_of_squares(&x.t().unwrap()).unwrap().to_vec1::<f64>().unwrap()[0];
        assert!((strided - expected).abs() <= 1e-12 * expected, "a strided view: {strided} vs {expected}");
        let candle =
            x.to_dtype(DType::F64).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap();
        assert!((got - candle).abs() <= 1e-12 * expected);
    }
}
