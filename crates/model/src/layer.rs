//! One Qwen2.5 decoder layer, callable on its own so that a trainer can run the model a
//! layer at a time: recompute it in the backward, gather and free its weights around it.

use std::collections::HashMap;

use candle_core::Tensor;

use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::names::LAYER_TENSORS;
use crate::ops::{add_rms_norm, rms_norm, swiglu, Rotary};
use crate::packing::PackedLayout;

/// The weights of one decoder layer, named as in Hugging Face checkpoints (within
/// `model.layers.N.`), with the sizes needed to run it.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: Tensor,
    q_proj: Tensor,
    q_bias: Tensor,
    k_proj: Tensor,
    k_bias: Tensor,
    v_proj: Tensor,
    v_bias: Tensor,
    o_proj: Tensor,
    post_attention_layernorm: Tensor,
    gate_proj: Tensor,
    up_proj: Tensor,
    down_proj: Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
}

impl DecoderLayer {
    /// Builds a layer from its tensors, keyed by their names within the layer
    /// (`self_attn.q_proj.weight`, ...). Shapes are checked against the config.
    pub fn from_tensors(config: &Config, mut tensors: HashMap<String, Tensor>) -> Result<Self> {
        let mut take = |suffix: &str| -> Result<Tensor> {
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
            Ok(tensor)
        };
        let taken: Vec<Tensor> = LAYER_TENSORS.iter().map(|suffix| take(suffix)).collect::<Result<_>>()?;
        // In the order of LAYER_TENSORS, so each field holds the tensor of its name.
        let Ok(
            [input_layernorm, q_proj, q_bias, k_proj, k_bias, v_proj, v_bias, o_proj, post_attention_layernorm, gate_proj, up_proj, down_proj],
        ) = <[Tensor; 12]>::try_from(taken)
        else {
            unreachable!("LAYER_TENSORS names 12 tensors")
        };
        Ok(Self {
            input_layernorm,
            q_proj,
            q_bias,
            k_proj,
            k_bias,
            v_proj,
            v_bias,
            o_proj,
            post_attention_layernorm,
            gate_proj,
            up_proj,
            down_proj,
            heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim(),
            eps: config.rms_norm_eps,
        })
    }

    /// The layer's tensors with their names within the layer, in the order of
    /// [`LAYER_TENSORS`].
    pub fn named_tensors(&self) -> impl Iterator<Item = (&'static str, &Tensor)> {
        let tensors = [
            &self.input_layernorm,
            &self.q_proj,
            &self.q_bias,
            &self.k_proj,
            &self.k_bias,
            &self.v_proj,
            &self.v_bias,
            &self.o_proj,
            &self.post_attention_layernorm,
            &self.gate_proj,
            &self.up_proj,
            &self.down_proj,
        ];
        LAYER_TENSORS.iter().copied().zip(tensors)
    }

    /// `hidden` (`[tokens, hidden_size]`) through attention and MLP, each with its
    /// pre-norm and residual connection.
    pub fn forward(&self, hidden: &Tensor, rotary: &Rotary, layout: &PackedLayout) -> Result<Tensor> {
        let tokens = hidden.dim(0)?;
        if tokens != layout.len() {
            return Err(ModelError::Packing(format!(
                "{tokens} hidden states for a layout of {} tokens",
                layout.len()
            )));
        }
        let x = rms_norm(hidden, &self.input_layernorm, self.eps)?;
        let heads = |weight: &Tensor, bias: &Tensor, count: usize| -> Result<Tensor> {
            Ok(linear(&x, weight, Some(bias))?.reshape((tokens, count, self.head_dim))?)
        };
        let q = heads(&self.q_proj, &self.q_bias, self.heads)?;
        let k = heads(&self.k_proj, &self.k_bias, self.kv_heads)?;
        let v = heads(&self.v_proj, &self.v_bias, self.kv_heads)?;
        let (q, k) = (rotary.apply(&q)?, rotary.apply(&k)?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let attended = layout.attend(&q, &k, &v, scale)?.reshape((tokens, self.heads * self.head_dim))?;
        let attn_out = linear(&attended, &self.o_proj, None)?;
        let (hidden, x) = add_rms_norm(hidden, &attn_out, &self.post_attention_layernorm, self.eps)?;
        let gated = swiglu(&linear(&x, &self.gate_proj, None)?, &linear(&x, &self.up_proj, None)?)?;
        Ok((hidden + linear(&gated, &self.down_proj, None)?)?)
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
