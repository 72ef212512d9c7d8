//! AdamW's settings and state on fp32 master weights and moments, with weight-decay masks
//! and global-norm clipping. [`AdamW`] is the host form of the state (checkpoints, the
//! start of a stage); during training FSDP keeps it on the device and steps it with
//! `davinci_kernels::ops::adamw_step` (see `sharded`). (candle-nn's AdamW keeps its moments
//! private and in the parameter's dtype, which is why this one exists.)

use davinci_kernels::adamw::Scalars;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// The kernel's scalars for optimizer step `step` (1 for the first) at rate `lr`.
    pub fn scalars(&self, step: u64, lr: f64) -> Scalars {
        Scalars::new(self.beta1, self.beta2, self.eps, self.weight_decay, step, lr)
    }
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
}
