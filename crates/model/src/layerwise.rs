//! The model run a layer at a time, the one driver behind both [`Qwen2`]'s forward and the
//! training step (see `docs/training.md`):
//!
//! - the forward keeps only each layer's input and, for training, runs without a gradient
//!   tape;
//! - the head computes the chunked loss and the gradient of the last hidden states;
//! - the backward recomputes one layer at a time on a tape and takes its vector-Jacobian
//!   product. Peak activation memory is one layer's, whatever the depth.
//!
//! Weights come from a [`WeightSource`] one unit at a time and are dropped after use, and
//! gradients leave through a sink as soon as a unit's are known: a whole model in memory
//! implements the source by handing out its tensors; FSDP gathers each unit's shards
//! there and reduce-scatters in the sink, without the model knowing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var};

use crate::config::Config;
use crate::error::ModelError;
use crate::layer::DecoderLayer;
use crate::model::Qwen2;
use crate::names::{layer_prefix, EMBED, FINAL_NORM, LM_HEAD};
use crate::ops::{embedding_backward, linear_cross_entropy, rms_norm, Rotary};
use crate::packing::PackedLayout;

/// A unit of weights, as the driver asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Embed,
    Layer(usize),
    Head,
}

/// Where the driver's weights come from, one unit at a time.
pub trait WeightSource {
    /// What fetching weights can fail with (a collective, for FSDP).
    type Error: From<ModelError> + From<candle_core::Error>;
    fn config(&self) -> &Config;
    fn device(&self) -> &Device;
    /// The token embedding matrix.
    fn embed_weight(&self) -> Result<Tensor, Self::Error>;
    /// Decoder layer `index`, ready to run.
    fn layer(&self, index: usize) -> Result<DecoderLayer, Self::Error>;
    /// The final norm's weight and the LM head's weight (the embedding when tied).
    fn head(&self) -> Result<(Tensor, Tensor), Self::Error>;
    /// Says which unit the driver asks for next, once the current one is in hand, so that
    /// a source that fetches weights can start early (FSDP's prefetch). Every call is
    /// followed by a request for that unit.
    fn prefetch(&self, _next: Unit) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl WeightSource for Qwen2 {
    type Error = ModelError;
    fn config(&self) -> &Config {
        Qwen2::config(self)
    }
    fn device(&self) -> &Device {
        Qwen2::device(self)
    }
    fn embed_weight(&self) -> Result<Tensor, ModelError> {
        Ok(Qwen2::embed_weight(self).clone())
    }
    fn layer(&self, index: usize) -> Result<DecoderLayer, ModelError> {
        Ok(self.layers()[index].clone())
    }
    fn head(&self) -> Result<(Tensor, Tensor), ModelError> {
        Ok((self.final_norm_weight().clone(), self.head_weight().clone()))
    }
}

/// Whether the forward records a gradient tape through every layer (a whole-model loss
/// to call `backward` on) or detaches after each layer and keeps its input for the
/// layer-by-layer backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tape {
    Keep,
    Recompute,
    /// Detaches after each layer but records each layer's own tape (its input and its
    /// weights as fresh variables), so that the layer-by-layer backward needs no
    /// recompute: a third less work, for the activations of every layer at once (what
    /// PyTorch holds without activation checkpointing). Under FSDP each layer's tape also
    /// holds its gathered weights until its backward.
    PerLayer,
}

/// One layer's forward on its own tape: the input and weights it was recorded against,
/// and its output.
pub struct LayerTape {
    input: Var,
    weights: Vec<(&'static str, Var)>,
    output: Tensor,
}

/// What the forward leaves: the last layer's output (before the final norm) and, with
/// [`Tape::Recompute`], each layer's input, with [`Tape::PerLayer`] each layer's tape.
pub struct Forward {
    pub hidden: Tensor,
    pub layer_inputs: Vec<Tensor>,
    pub layer_tapes: Vec<LayerTape>,
    pub rotary: Rotary,
    pub ids: Tensor,
}

/// The token ids as a tensor, refusing any id outside the vocabulary.
fn token_tensor(
    config: &Config,
    input_ids: &[u32],
    layout: &PackedLayout,
    device: &Device,
) -> Result<Tensor, ModelError> {
    let vocab = config.vocab_size;
    if let Some((t, id)) = input_ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        let message = format!("token id {id} at position {t} is outside the vocabulary (size {vocab})");
        return Err(ModelError::Packing(message));
    }
    if input_ids.len() != layout.len() {
        let message = format!("{} tokens for cu_seqlens covering {}", input_ids.len(), layout.len());
        return Err(ModelError::Packing(message));
    }
    Ok(Tensor::new(input_ids, device)?)
}

/// Embedding and every decoder layer over one packed row.
pub fn forward<S: WeightSource + ?Sized>(
    model: &S,
    input_ids: &[u32],
    layout: &PackedLayout,
    tape: Tape,
) -> Result<Forward, S::Error> {
    let config = model.config();
    let device = model.device();
    let ids = token_tensor(config, input_ids, layout, device)?;
    let rotary = Rotary::new(layout.positions(), config.head_dim(), config.rope_theta, device)?;
    let cut = |t: Tensor| if tape == Tape::Keep { t } else { t.detach() };
    let layers = config.num_hidden_layers;
    let next_after = |index: usize| if index + 1 < layers { Unit::Layer(index + 1) } else { Unit::Head };
    let embed = model.embed_weight()?;
    model.prefetch(if layers > 0 { Unit::Layer(0) } else { Unit::Head })?;
    let mut hidden = cut(embed.index_select(&ids, 0)?);
    drop(embed);
    let mut layer_inputs = Vec::with_capacity(if tape == Tape::Recompute { layers } else { 0 });
    let mut layer_tapes = Vec::with_capacity(if tape == Tape::PerLayer { layers } else { 0 });
    for index in 0..layers {
        if tape == Tape::Recompute {
            layer_inputs.push(hidden.clone());
        }
        let layer = model.layer(index)?;
        model.prefetch(next_after(index))?;
        if tape == Tape::PerLayer {
            let input = Var::from_tensor(&hidden)?;
            let (trainable, weights) = trainable_layer(config, &layer)?;
            let output = trainable.forward(input.as_tensor(), &rotary, layout)?;
            hidden = output.detach();
            layer_tapes.push(LayerTape { input, weights, output });
        } else {
            hidden = cut(layer.forward(&hidden, &rotary, layout)?);
        }
    }
    Ok(Forward { hidden, layer_inputs, layer_tapes, rotary, ids })
}

/// The gradients of one unit (named as in Hugging Face checkpoints), all of them at once.
pub type GradSink<'a, E> = dyn FnMut(Vec<(String, Tensor)>) -> Result<(), E> + 'a;

/// What [`loss_and_grads`] measured: the loss, and wall time per phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    /// The *sum* of token losses (the trainer divides by the token count of the whole
    /// global batch), and how many tokens carried a label.
    pub loss_sum: f64,
    pub count: usize,
    pub forward: Duration,
    pub head: Duration,
    pub backward: Duration,
}

/// `d/dx sum(f(x) * cotangent)`: the vector-Jacobian product, through candle's tape.
fn vjp(output: &Tensor, cotangent: &Tensor) -> candle_core::Result<candle_core::backprop::GradStore> {
    (output * cotangent)?.sum_all()?.backward()
}

/// Loss and gradients of one packed row (or a batch flattened into one), handing each
/// unit's gradients to `sink` as soon as they are known: the head's first (a tied head's
/// gradient is the embedding's, so the embedding may be handed twice), then each layer's
/// as its backward ends, the embedding's last. Each layer is recomputed in the backward.
pub fn loss_and_grads<S: WeightSource + ?Sized>(
    model: &S,
    input_ids: &[u32],
    labels: &[i64],
    layout: &PackedLayout,
    sink: &mut GradSink<S::Error>,
) -> Result<StepStats, S::Error> {
    loss_and_grads_with(model, input_ids, labels, layout, Activations::Recompute, sink)
}

/// Where the layer-by-layer backward gets each layer's tape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activations {
    /// Runs each layer again (activation checkpointing): one layer's activations at a time.
    Recompute,
    /// Keeps each layer's tape from the forward ([`Tape::PerLayer`]).
    Keep,
}

/// [`loss_and_grads`] with each layer's tape coming from where `activations` says.
pub fn loss_and_grads_with<S: WeightSource + ?Sized>(
    model: &S,
    input_ids: &[u32],
    labels: &[i64],
    layout: &PackedLayout,
    activations: Activations,
    sink: &mut GradSink<S::Error>,
) -> Result<StepStats, S::Error> {
    let tape = match activations {
        Activations::Recompute => Tape::Recompute,
        Activations::Keep => Tape::PerLayer,
    };
    let config = model.config();
    let mut stats = StepStats::default();
    let mut clock = Instant::now();
    let mut lap = |phase: &mut Duration| {
        *phase += clock.elapsed();
        clock = Instant::now();
    };

    let Forward { hidden, mut layer_inputs, mut layer_tapes, rotary, ids } =
        forward(model, input_ids, layout, tape)?;
    // Only a recomputing backward asks for the layers again (prefetch announces a request).
    let recompute = tape == Tape::Recompute;
    lap(&mut stats.forward);

    // Head: final norm on a small tape, then the chunked loss with its gradients. In a
    // block, so that the last hidden state, its copies and the loss's gradients are freed
    // before the backward (five tokens x hidden tensors it would otherwise carry through).
    let layers = config.num_hidden_layers;
    let (head_sums, mut cotangent) = {
        let (norm, head_weight) = model.head()?;
        if layers > 0 && recompute {
            model.prefetch(Unit::Layer(layers - 1))?;
        }
        let last = Var::from_tensor(&hidden)?;
        drop(hidden);
        let norm_weight = Var::from_tensor(&norm)?;
        let normed = rms_norm(last.as_tensor(), norm_weight.as_tensor(), config.rms_norm_eps)?;
        let head = linear_cross_entropy(&normed.detach(), &head_weight, labels, None, true)?;
        drop(head_weight);
        let (Some(d_normed), Some(d_head)) = (head.d_hidden, head.d_weight) else {
            unreachable!("gradients were asked for")
        };
        let store = vjp(&normed, &d_normed.to_dtype(normed.dtype())?)?;
        let head_name = if config.tie_word_embeddings { EMBED } else { LM_HEAD };
        let mut head_grads = vec![(head_name.to_string(), d_head)];
        if let Some(g) = store.get(norm_weight.as_tensor()) {
            head_grads.push((FINAL_NORM.to_string(), g.clone()));
        }
        sink(head_grads)?;
        ((head.loss_sum, head.count), grad_of(&store, &last)?)
    };
    lap(&mut stats.head);

    // Backward, a layer at a time, on its kept tape or recomputed on a new one.
    for index in (0..layers).rev() {
        let LayerTape { input: x, weights: vars, output: out } = match layer_tapes.pop() {
            Some(kept) => kept,
            None => {
                let input = Var::from_tensor(&layer_inputs[index])?;
                let layer = model.layer(index)?;
                if index > 0 {
                    model.prefetch(Unit::Layer(index - 1))?;
                }
                let (trainable, weights) = trainable_layer(config, &layer)?;
                drop(layer);
                let output = trainable.forward(input.as_tensor(), &rotary, layout)?;
                LayerTape { input, weights, output }
            }
        };
        let store = vjp(&out, &cotangent)?;
        let prefix = layer_prefix(index);
        let unit = vars
            .iter()
            .filter_map(|(suffix, var)| {
                store.get(var.as_tensor()).map(|g| (format!("{prefix}{suffix}"), g.clone()))
            })
            .collect();
        sink(unit)?;
        cotangent = grad_of(&store, &x)?;
        layer_inputs.truncate(index);
    }

    // Embedding: the rows of the token ids receive the input gradient.
    // (Shaped from the config: under FSDP, asking for the weight would gather it again.)
    let d_embed = embedding_backward(&ids, &cotangent, config.vocab_size)?;
    sink(vec![(EMBED.to_string(), d_embed)])?;
    lap(&mut stats.backward);
    (stats.loss_sum, stats.count) = head_sums;
    Ok(stats)
}

fn grad_of(store: &candle_core::backprop::GradStore, var: &Var) -> candle_core::Result<Tensor> {
    match store.get(var.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => var.as_tensor().zeros_like(),
    }
}

/// The same layer with its weights as fresh `Var`s (sharing storage), so that a tape
/// records them during the recompute.
fn trainable_layer(
    config: &Config,
    layer: &DecoderLayer,
) -> crate::error::Result<(DecoderLayer, Vec<(&'static str, Var)>)> {
    let mut vars = Vec::new();
    let mut tensors = HashMap::new();
    for (suffix, tensor) in layer.named_tensors() {
        let var = Var::from_tensor(&tensor.detach())?;
        tensors.insert(suffix.to_string(), var.as_tensor().clone());
        vars.push((suffix, var));
    }
    Ok((DecoderLayer::from_tensors(config, tensors)?, vars))
}
