//! The embedding's backward: row `id` of the weight's gradient sums the gradients of the
//! positions holding token `id`.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// `[vocab, hidden]` f32: the rows of `d_hidden` (`[tokens, hidden]`) added into the rows
/// that `ids` (`[tokens]` u32) name. On the CPU the sum is made in one zeroed buffer (the
/// tensor version copies a zero tensor of the whole vocabulary before adding); both add
/// the positions in order, so they give the same bits.
pub fn embedding_backward(ids: &Tensor, d_hidden: &Tensor, vocab: usize) -> Result<Tensor> {
    let d_hidden = d_hidden.to_dtype(DType::F32)?;
    let (tokens, width) = d_hidden.dims2()?;
    if !ids.device().is_cpu() {
        let zeros = Tensor::zeros((vocab, width), DType::F32, ids.device())?;
        return Ok(zeros.index_add(ids, &d_hidden, 0)?);
    }
    let ids = ids.to_vec1::<u32>()?;
    let rows = d_hidden.flatten_all()?.to_vec1::<f32>()?;
    if ids.len() != tokens {
        return Err(candle_core::Error::Msg(format!("{} ids for {tokens} gradient rows", ids.len())).into());
    }
    let mut grad = vec![0f32; vocab * width];
    for (&id, row) in ids.iter().zip(rows.chunks(width)) {
        let id = id as usize;
        if id >= vocab {
            return Err(
                candle_core::Error::Msg(format!("token id {id} outside a vocabulary of {vocab}")).into()
            );
        }
        grad[id * width..(id + 1) * width].iter_mut().zip(row).for_each(|(g, &d)| *g += d);
    }
    Ok(Tensor::from_vec(grad, (vocab, width), &candle_core::Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Repeated ids sum; the result is the tensor version's, bit for bit.
    #[test]
    fn the_cpu_embedding_backward_is_the_index_add_of_the_rows() {
        let ids = Tensor::new(&[3u32, 0, 3, 5, 3], &Device::Cpu).unwrap();
        let rows: Vec<f32> = (0..15).map(|i| (i as f32 * 0.37).sin()).collect();
        let d_hidden = Tensor::from_vec(rows, (5, 3), &Device::Cpu).unwrap();
        let got = embedding_backward(&ids, &d_hidden, 7).unwrap();
        let zeros = Tensor::zeros((7, 3), DType::F32, &Device::Cpu).unwrap();
        let expected = zeros.index_add(&ids, &d_hidden, 0).unwrap();
        assert_eq!(got.to_vec2::<f32>().unwrap(), expected.to_vec2::<f32>().unwrap());
        let bad = Tensor::new(&[3u32, 0, 9, 5, 3], &Device::Cpu).unwrap();
        let err = embedding_backward(&bad, &d_hidden, 7).unwrap_err();
        assert!(err.to_string().contains("token id 9 outside a vocabulary of 7"), "{err}");
    }
}
