//! The whole Qwen2.5 causal language model over one packed row.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};

use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::layer::{linear, DecoderLayer};
use crate::layerwise::{self, Tape};
use crate::names::{self, EMBED, FINAL_NORM, LM_HEAD};
use crate::ops::{mean_cross_entropy_loss, rms_norm};
use crate::packing::PackedLayout;

/// Token embedding, decoder layers, final norm and LM head (tied to the embedding when
/// the config says so). The tensors may be plain or [`Var`]s; see [`Qwen2::into_trainable`].
#[derive(Debug, Clone)]
pub struct Qwen2 {
    config: Config,
    embed: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    lm_head: Option<Tensor>,
}

impl Qwen2 {
    /// Builds the model from tensors keyed by their Hugging Face names. Every tensor the
    /// config implies must be there with its shape; `lm_head.weight` is ignored when the
    /// embeddings are tied.
    pub fn from_tensors(config: Config, mut tensors: HashMap<String, Tensor>) -> Result<Self> {
        config.validate()?;
        let mut take = |name: &str| -> Result<Tensor> {
            tensors.remove(name).ok_or_else(|| ModelError::MissingTensor {
                name: name.into(),
                path: "the given tensors".into(),
            })
        };
        let embed = take(EMBED)?;
        let norm = take(FINAL_NORM)?;
        let lm_head = if config.tie_word_embeddings { None } else { Some(take(LM_HEAD)?) };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for layer in 0..config.num_hidden_layers {
            let prefix = names::layer_prefix(layer);
            let mut own = HashMap::new();
            for suffix in names::LAYER_TENSORS {
                own.insert(suffix.to_string(), take(&format!("{prefix}{suffix}"))?);
            }
            layers.push(DecoderLayer::from_tensors(&config, own)?);
        }
        let model = Self { config, embed, layers, norm, lm_head };
        let shapes: HashMap<String, Vec<usize>> =
            names::parameter_shapes(&model.config).into_iter().collect();
        // Layer tensors were checked by `DecoderLayer::from_tensors`; the rest are checked here.
        for (name, tensor) in
            model.named_tensors().into_iter().filter(|(n, _)| !n.starts_with("model.layers."))
        {
            let expected = shapes.get(&name).cloned().unwrap_or_default();
            if tensor.dims() != expected.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    name,
                    path: "the given tensors".into(),
                    expected,
                    actual: tensor.dims().to_vec(),
                });
            }
        }
        Ok(model)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    pub fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    /// Every tensor with its Hugging Face name, in transformers' order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![(EMBED.to_string(), self.embed.clone())];
        for (i, layer) in self.layers.iter().enumerate() {
            let prefix = names::layer_prefix(i);
            out.extend(layer.named_tensors().map(|(s, t)| (format!("{prefix}{s}"), t.clone())));
        }
        out.push((FINAL_NORM.to_string(), self.norm.clone()));
        if let Some(head) = &self.lm_head {
            out.push((LM_HEAD.to_string(), head.clone()));
        }
        out
    }

    /// The same model with every tensor turned into a [`Var`], so that a backward pass
    /// gives each one a gradient; the vars are returned with their names.
    pub fn into_trainable(self) -> Result<(Self, Vec<(String, Var)>)> {
        let mut vars = Vec::new();
        let mut tensors = HashMap::new();
        for (name, tensor) in self.named_tensors() {
            let var = Var::from_tensor(&tensor)?;
            tensors.insert(name.clone(), var.as_tensor().clone());
            vars.push((name, var));
        }
        Ok((Self::from_tensors(self.config, tensors)?, vars))
    }

    /// The LM head's weight: the embedding matrix when tied.
    pub fn head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    pub fn embed_weight(&self) -> &Tensor {
        &self.embed
    }

    pub fn final_norm_weight(&self) -> &Tensor {
        &self.norm
    }

    /// Hidden states after the final norm, `[tokens, hidden_size]`.
    /// Runs through [`crate::layerwise::forward`], the driver the trainer uses, keeping
    /// the gradient tape.
    pub fn hidden_states(&self, input_ids: &[u32], layout: &PackedLayout) -> Result<Tensor> {
        let forward = layerwise::forward(self, input_ids, layout, Tape::Keep)?;
        Ok(rms_norm(&forward.hidden, &self.norm, self.config.rms_norm_eps)?)
    }

    /// Full logits, `[tokens, vocab]`. For inspection and checks; training uses
    /// [`Qwen2::loss`], which never materialises them.
    pub fn logits(&self, input_ids: &[u32], layout: &PackedLayout) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, layout)?;
        linear(&hidden, self.head_weight(), None)
    }

    /// Mean cross-entropy over positions whose label is not -100 (`labels[t]` is the
    /// target of position `t`), as a scalar on the gradient tape.
    pub fn loss(&self, input_ids: &[u32], labels: &[i64], layout: &PackedLayout) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, layout)?;
        mean_cross_entropy_loss(&hidden, self.head_weight(), labels, None)
    }
}
