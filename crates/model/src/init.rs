//! Fresh weights for training from scratch, reproducible from a seed on any machine.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::config::Config;
use crate::error::Result;
use crate::model::Qwen2;
use crate::names::parameter_shapes;

/// SplitMix64 and Box-Muller: a portable normal generator.
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

impl Qwen2 {
    /// A model with transformers' initialisation for Qwen2: weights from N(0, std) with
    /// std = `initializer_range` (0.02 when absent), biases 0, norm weights 1; f32.
    pub fn init(config: Config, seed: u64, device: &Device) -> Result<Self> {
        let std = config.extra.get("initializer_range").and_then(|v| v.as_f64()).unwrap_or(0.02);
        let mut rng = Normal(seed ^ 0xD1CE);
        let mut tensors = HashMap::new();
        for (name, shape) in parameter_shapes(&config) {
            let count: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; count]
            } else if name.ends_with(".bias") {
                vec![0.0; count]
            } else {
                (0..count).map(|_| (rng.sample() * std) as f32).collect()
            };
            tensors.insert(name, Tensor::from_vec(values, shape, device)?);
        }
        Qwen2::from_tensors(config, tensors)
    }
}
