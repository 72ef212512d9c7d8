//! Fresh weights for training from scratch, reproducible from a seed on any machine.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::config::Config;
use crate::error::Result;
use crate::model::Qwen2;
use crate::names::parameter_shapes;

/// One round of SplitMix64's output function: a well-mixed 64-bit value from a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Element `index` of a standard normal stream keyed by `key`: counter-based (Box-Muller
/// on two hashed counters), so any slice of a parameter is computed without the rest —
/// what lets each FSDP rank initialise only its shard.
fn normal_at(key: u64, index: u64) -> f64 {
    let u = unit(mix(key ^ mix(2 * index))).max(f64::MIN_POSITIVE);
    let v = unit(mix(key ^ mix(2 * index + 1)));
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// The key of a parameter's stream: the seed and the parameter's name.
fn stream_key(seed: u64, name: &str) -> u64 {
    name.bytes().fold(mix(seed ^ 0xD1CE), |h, b| mix(h ^ b as u64))
}

/// Elements `range` of parameter `name`'s fresh values (flattened), as [`Qwen2::init`]
/// gives them.
pub fn init_values(config: &Config, seed: u64, name: &str, range: std::ops::Range<usize>) -> Vec<f32> {
    let std = config.extra.get("initializer_range").and_then(|v| v.as_f64()).unwrap_or(0.02);
    if name.ends_with("norm.weight") {
        vec![1.0; range.len()]
    } else if name.ends_with(".bias") {
        vec![0.0; range.len()]
    } else {
        let key = stream_key(seed, name);
        range.map(|i| (normal_at(key, i as u64) * std) as f32).collect()
    }
}

impl Qwen2 {
    /// A model with transformers' initialisation for Qwen2: weights from N(0, std) with
    /// std = `initializer_range` (0.02 when absent), biases 0, norm weights 1; f32.
    pub fn init(config: Config, seed: u64, device: &Device) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (name, shape) in parameter_shapes(&config) {
            let count: usize = shape.iter().product();
            let values = init_values(&config, seed, &name, 0..count);
            tensors.insert(name, Tensor::from_vec(values, shape, device)?);
        }
        Qwen2::from_tensors(config, tensors)
    }
}
