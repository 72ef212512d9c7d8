//! One training step's loss and gradients, a layer at a time (see `../shared/design.md`):
//! the forward keeps only each layer's input and runs without a gradient tape; the head
//! computes the chunked loss and the gradient of the last hidden states; the backward
//! recomputes one layer at a time on a tape and takes its vector-Jacobian product. Peak
//! activation memory is one layer's, whatever the depth. FSDP wraps the same loop with a
//! gather before each layer and a reduce-scatter after its backward.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor, Var};
use davinci_model::names::{layer_prefix, EMBED, FINAL_NORM, LM_HEAD};
use davinci_model::ops::{linear_cross_entropy, rms_norm};
use davinci_model::{DecoderLayer, PackedLayout, Qwen2};

use crate::error::Result;

/// The result of [`loss_and_grads`]: gradients of the *sum* of token losses (the trainer
/// divides by the token count of the whole global batch), keyed by Hugging Face name.
pub struct StepGrads {
    pub loss_sum: f64,
    pub count: usize,
    pub grads: HashMap<String, Tensor>,
}

/// `d/dx sum(f(x) * cotangent)`: the vector-Jacobian product, through candle's tape.
fn vjp(output: &Tensor, cotangent: &Tensor) -> Result<candle_core::backprop::GradStore> {
    Ok((output * cotangent)?.sum_all()?.backward()?)
}

/// Loss and gradients of one packed row (or a batch flattened into one), with the model's
/// tensors held plain (not as `Var`s).
pub fn loss_and_grads(
    model: &Qwen2,
    input_ids: &[u32],
    labels: &[i64],
    layout: &PackedLayout,
) -> Result<StepGrads> {
    let mut grads: HashMap<String, Tensor> = HashMap::new();
    let stats =
        loss_and_grads_into(model, input_ids, labels, layout, &mut |name, grad| add(&mut grads, name, grad))?;
    Ok(StepGrads { loss_sum: stats.loss_sum, count: stats.count, grads })
}

/// What [`loss_and_grads_into`] measured: the loss, and wall time per phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepStats {
    pub loss_sum: f64,
    pub count: usize,
    pub forward: Duration,
    pub head: Duration,
    pub backward: Duration,
}

/// The same as [`loss_and_grads`], handing each gradient (f32) to `sink` as soon as it is
/// known: the head's first, then each layer's as its backward ends, the embedding's last.
/// The trainer accumulates them into flat buffers (FSDP: reduce-scatters them) so that no
/// more than one layer's gradients are held here.
pub fn loss_and_grads_into(
    model: &Qwen2,
    input_ids: &[u32],
    labels: &[i64],
    layout: &PackedLayout,
    sink: &mut dyn FnMut(&str, Option<&Tensor>) -> Result<()>,
) -> Result<StepStats> {
    let config = model.config();
    let rotary = model.rotary(layout)?;
    let mut stats = StepStats::default();
    let mut clock = Instant::now();
    let mut lap = |phase: &mut Duration| {
        *phase += clock.elapsed();
        clock = Instant::now();
    };

    // Forward without a tape, keeping each layer's input.
    let mut inputs = Vec::with_capacity(model.layers().len());
    let mut hidden = model.embed(input_ids)?.detach();
    for layer in model.layers() {
        inputs.push(hidden.clone());
        hidden = layer.forward(&hidden, &rotary, layout)?.detach();
    }
    lap(&mut stats.forward);

    // Head: final norm on a small tape, then the chunked loss with its gradients.
    let last = Var::from_tensor(&hidden)?;
    let norm_weight = Var::from_tensor(model.final_norm_weight())?;
    let normed = rms_norm(last.as_tensor(), norm_weight.as_tensor(), config.rms_norm_eps)?;
    let head = linear_cross_entropy(&normed.detach(), model.head_weight(), labels, None, true)?;
    let (Some(d_normed), Some(d_head)) = (head.d_hidden, head.d_weight) else {
        unreachable!("gradients were asked for")
    };
    let store = vjp(&normed, &d_normed.to_dtype(normed.dtype())?)?;
    sink(FINAL_NORM, store.get(norm_weight.as_tensor()))?;
    let head_name = if config.tie_word_embeddings { EMBED } else { LM_HEAD };
    sink(head_name, Some(&d_head))?;
    let mut cotangent = grad_of(&store, &last)?;
    lap(&mut stats.head);

    // Backward, a layer at a time, recomputed on a tape.
    for (index, layer) in model.layers().iter().enumerate().rev() {
        let x = Var::from_tensor(&inputs[index])?;
        let (trainable, vars) = trainable_layer(config, layer)?;
        let out = trainable.forward(x.as_tensor(), &rotary, layout)?;
        let store = vjp(&out, &cotangent)?;
        let prefix = layer_prefix(index);
        for (suffix, var) in &vars {
            sink(&format!("{prefix}{suffix}"), store.get(var.as_tensor()))?;
        }
        cotangent = grad_of(&store, &x)?;
    }

    // Embedding: the rows of the token ids receive the input gradient.
    let ids = Tensor::new(input_ids, model.device())?;
    let d_embed = model.embed_weight().zeros_like()?.to_dtype(DType::F32)?.index_add(
        &ids,
        &cotangent.to_dtype(DType::F32)?,
        0,
    )?;
    sink(EMBED, Some(&d_embed))?;
    lap(&mut stats.backward);
    stats.loss_sum = head.loss_sum;
    stats.count = head.count;
    Ok(stats)
}

fn grad_of(store: &candle_core::backprop::GradStore, var: &Var) -> Result<Tensor> {
    match store.get(var.as_tensor()) {
        Some(g) => Ok(g.clone()),
        None => Ok(var.as_tensor().zeros_like()?),
    }
}

/// Accumulates a gradient (in f32) under a name; tied weights receive two contributions.
fn add(grads: &mut HashMap<String, Tensor>, name: &str, grad: Option<&Tensor>) -> Result<()> {
    let Some(grad) = grad else { return Ok(()) };
    let grad = grad.to_dtype(DType::F32)?;
    let sum = match grads.remove(name) {
        Some(previous) => (previous + grad)?,
        None => grad,
    };
    grads.insert(name.to_string(), sum);
    Ok(())
}

/// The same layer with its weights as fresh `Var`s (sharing storage), so that a tape
/// records them during the recompute.
fn trainable_layer(
    config: &davinci_model::Config,
    layer: &DecoderLayer,
) -> Result<(DecoderLayer, Vec<(&'static str, Var)>)> {
    let mut vars = Vec::new();
    let mut tensors = HashMap::new();
    for (suffix, tensor) in layer.named_tensors() {
        let var = Var::from_tensor(&tensor.detach())?;
        tensors.insert(suffix.to_string(), var.as_tensor().clone());
        vars.push((suffix, var));
    }
    Ok((DecoderLayer::from_tensors(config, tensors)?, vars))
}
