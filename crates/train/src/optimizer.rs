//! AdamW on fp32 master weights and moments, with weight-decay masks and global-norm
//! clipping. Flat f32 buffers per parameter: the layout the multi-tensor CUDA kernel and
//! FSDP's shards use. (candle-nn's AdamW keeps its moments private and in the parameter's
//! dtype, which is why this one exists.) The update itself is `davinci_kernels::adamw`'s,
//! the reference of the CUDA kernel, which takes bit-identical steps.

use davinci_kernels::adamw::{update_cpu, Scalars};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

/// Whether a parameter is decayed: not norms and not biases (the usual rule for LLMs).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.ends_with("norm.weight"))
}

/// One parameter's optimizer state.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamState {
    pub name: String,
    pub master: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub decay: bool,
}

impl ParamState {
    pub fn new(name: &str, master: Vec<f32>) -> Self {
        let n = master.len();
        Self { name: name.into(), master, m: vec![0.0; n], v: vec![0.0; n], decay: decays(name) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimizer steps taken (bias correction uses it).
    pub steps: u64,
    pub params: Vec<ParamState>,
}

/// The sum of squares of all gradients together, accumulated in f64: the square of the
/// global norm, or one rank's share of it.
pub fn sum_of_squares(grads: &[&[f32]]) -> f64 {
    grads.iter().flat_map(|g| g.iter()).map(|&x| (x as f64) * (x as f64)).sum::<f64>()
}

/// The L2 norm of all gradients together, accumulated in f64.
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    sum_of_squares(grads).sqrt()
}

/// The factor that brings a gradient of norm `norm` down to `max_norm` (1 when below).
pub fn clip_factor(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm {
        Some(max) if norm > max && norm.is_finite() => max / (norm + 1e-6),
        _ => 1.0,
    }
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: Vec<ParamState>) -> Self {
        Self { config, steps: 0, params }
    }

    /// One step: `grads[i]` (already scaled, e.g. by clipping and 1/tokens) for `params[i]`.
    /// Decoupled weight decay: `w -= lr * wd * w` on decayed parameters.
    pub fn step(&mut self, grads: &[&[f32]], lr: f64) {
        assert_eq!(grads.len(), self.params.len(), "one gradient per parameter");
        self.steps += 1;
        let c = self.config;
        let scalars = Scalars::new(c.beta1, c.beta2, c.eps, c.weight_decay, self.steps, lr);
        for (param, grad) in self.params.iter_mut().zip(grads) {
            update_cpu(&mut param.master, &mut param.m, &mut param.v, grad, param.decay, &scalars);
        }
    }
}
