//! Hugging Face tensor names and the shapes the config implies for them.

use crate::config::Config;

pub const EMBED: &str = "model.embed_tokens.weight";
pub const FINAL_NORM: &str = "model.norm.weight";
pub const LM_HEAD: &str = "lm_head.weight";

/// Tensor names inside one decoder layer, after `model.layers.N.`, in transformers' order.
pub const LAYER_TENSORS: [&str; 12] = [
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
];

pub fn layer_prefix(layer: usize) -> String {
    format!("model.layers.{layer}.")
}

/// The shape of a layer tensor, by its name within the layer.
pub fn layer_tensor_shape(config: &Config, suffix: &str) -> Vec<usize> {
    let h = config.hidden_size;
    let kv = config.num_key_value_heads * config.head_dim();
    let i = config.intermediate_size;
    match suffix {
        "input_layernorm.weight" | "post_attention_layernorm.weight" | "self_attn.q_proj.bias" => vec![h],
        "self_attn.q_proj.weight" | "self_attn.o_proj.weight" => vec![h, h],
        "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv, h],
        "self_attn.k_proj.bias" | "self_attn.v_proj.bias" => vec![kv],
        "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![i, h],
        "mlp.down_proj.weight" => vec![h, i],
        _ => unreachable!("not a layer tensor: {suffix}"),
    }
}

/// Every tensor of the model with its shape, in the order transformers lists them.
pub fn parameter_shapes(config: &Config) -> Vec<(String, Vec<usize>)> {
    let (h, v) = (config.hidden_size, config.vocab_size);
    let mut shapes = vec![(EMBED.to_string(), vec![v, h])];
    for layer in 0..config.num_hidden_layers {
        let prefix = layer_prefix(layer);
        for suffix in LAYER_TENSORS {
            shapes.push((format!("{prefix}{suffix}"), layer_tensor_shape(config, suffix)));
        }
    }
    shapes.push((FINAL_NORM.to_string(), vec![h]));
    if !config.tie_word_embeddings {
        shapes.push((LM_HEAD.to_string(), vec![v, h]));
    }
    shapes
}
