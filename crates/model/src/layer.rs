//! One Qwen2.5 decoder layer, callable on its own so that a trainer can run the model a
//! layer at a time: recompute it in the backward, gather and free its weights around it.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::names::LAYER_TENSORS;
use crate::ops::{add_rms_norm, rms_norm, swiglu, varlen_causal_attention, Rotary};
use crate::packing::PackedLayout;

/// The weights of one decoder layer, with the sizes needed to run it.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    /// The layer's tensors in the order of [`LAYER_TENSORS`].
    tensors: Vec<Tensor>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
}

/// Positions of each tensor in `DecoderLayer::tensors`.
mod slot {
    pub const INPUT_NORM: usize = 0;
    pub const Q_W: usize = 1;
    pub const Q_B: usize = 2;
    pub const K_W: usize = 3;
    pub const K_B: usize = 4;
    pub const V_W: usize = 5;
    pub const V_B: usize = 6;
    pub const O_W: usize = 7;
    pub const POST_NORM: usize = 8;
    pub const GATE: usize = 9;
    pub const UP: usize = 10;
    pub const DOWN: usize = 11;
}

impl DecoderLayer {
    /// Builds a layer from its tensors, keyed by their names within the layer
    /// (`self_attn.q_proj.weight`, ...). Shapes are checked against the config.
    pub fn from_tensors(config: &Config, mut tensors: HashMap<String, Tensor>) -> Result<Self> {
        let mut ordered = Vec::with_capacity(LAYER_TENSORS.len());
        for suffix in LAYER_TENSORS {
            let tensor = tensors
                .remove(suffix)
                .ok_or_else(|| ModelError::InvalidConfig(format!("decoder layer is missing `{suffix}`")))?;
            let expected = crate::names::layer_tensor_shape(config, suffix);
            if tensor.dims() != expected.as_slice() {
                return Err(ModelError::InvalidConfig(format!(
                    "decoder layer tensor `{suffix}` has shape {:?}, expected {expected:?}",
                    tensor.dims()
                )));
            }
            ordered.push(tensor);
        }
        Ok(Self {
            tensors: ordered,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim(),
            eps: config.rms_norm_eps,
        })
    }

    /// The layer's tensors with their names within the layer.
    pub fn named_tensors(&self) -> impl Iterator<Item = (&'static str, &Tensor)> {
        LAYER_TENSORS.iter().copied().zip(self.tensors.iter())
    }

    /// `hidden` (`[tokens, hidden_size]`) through attention and MLP, each with its
    /// pre-norm and residual connection.
    pub fn forward(&self, hidden: &Tensor, rotary: &Rotary, layout: &PackedLayout) -> Result<Tensor> {
        let t = &self.tensors;
        let tokens = hidden.dim(0)?;
        if tokens != layout.len() {
            return Err(ModelError::Packing(format!(
                "{tokens} hidden states for a layout of {} tokens",
                layout.len()
            )));
        }
        let x = rms_norm(hidden, &t[slot::INPUT_NORM], self.eps)?;
        let q =
            linear(&x, &t[slot::Q_W], Some(&t[slot::Q_B]))?.reshape((tokens, self.heads, self.head_dim))?;
        let k = linear(&x, &t[slot::K_W], Some(&t[slot::K_B]))?.reshape((
            tokens,
            self.kv_heads,
            self.head_dim,
        ))?;
        let v = linear(&x, &t[slot::V_W], Some(&t[slot::V_B]))?.reshape((
            tokens,
            self.kv_heads,
            self.head_dim,
        ))?;
        let (q, k) = (rotary.apply(&q)?, rotary.apply(&k)?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let attended = varlen_causal_attention(&q, &k, &v, layout.cu_seqlens(), scale)?
            .reshape((tokens, self.heads * self.head_dim))?;
        let attn_out = linear(&attended, &t[slot::O_W], None)?;
        let (hidden, x) = add_rms_norm(hidden, &attn_out, &t[slot::POST_NORM], self.eps)?;
        let gated = swiglu(&linear(&x, &t[slot::GATE], None)?, &linear(&x, &t[slot::UP], None)?)?;
        Ok((hidden + linear(&gated, &t[slot::DOWN], None)?)?)
    }
}

/// `x @ weight^T + bias`, with `weight` laid out `[out, in]` as in PyTorch.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(&weight.t()?)?;
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}
