//! AdamW as the trainer steps it (the in-place op on a shard's state, with the scalars of
//! the recipe's settings) against a plain f64 transcription of the algorithm, clipping,
//! and schedules.

use candle_core::{Device, Tensor};
use davinci_kernels::ops::adamw_step;
use davinci_train::optimizer::{clip_factor, decays, AdamWConfig};
use davinci_train::schedule::{Decay, Schedule};

/// One parameter under decoupled-weight-decay Adam (Loshchilov & Hutter), in f64.
struct Reference {
    w: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    decay: bool,
}

impl Reference {
    #[allow(clippy::needless_range_loop)] // the formula reads best with one index
    fn step(&mut self, g: &[f64], t: i32, lr: f64, c: AdamWConfig) {
        for i in 0..self.w.len() {
            self.m[i] = c.beta1 * self.m[i] + (1.0 - c.beta1) * g[i];
            self.v[i] = c.beta2 * self.v[i] + (1.0 - c.beta2) * g[i] * g[i];
            let m_hat = self.m[i] / (1.0 - c.beta1.powi(t));
            let v_hat = self.v[i] / (1.0 - c.beta2.powi(t));
            if self.decay {
                self.w[i] -= lr * c.weight_decay * self.w[i];
            }
            self.w[i] -= lr * m_hat / (v_hat.sqrt() + c.eps);
        }
    }
}

#[test]
fn adamw_matches_the_reference_and_skips_decay_on_norms_and_biases() {
    assert!(decays("model.layers.0.mlp.up_proj.weight"));
    assert!(!decays("model.layers.0.self_attn.q_proj.bias") && !decays("model.norm.weight"));
    let config = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let init: Vec<f32> = (0..37).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect();
    let names = ["w.weight", "model.norm.weight"];
    // One shard holding both parameters, as FSDP lays them out: [master; m; v].
    let segments: Vec<(usize, bool)> = names.iter().map(|n| (37, decays(n))).collect();
    let mut flat = [init.clone(), init.clone()].concat();
    flat.extend(vec![0.0f32; 4 * 37]);
    let state = Tensor::from_vec(flat, (3, 74), &Device::Cpu).unwrap();
    let mut refs: Vec<Reference> = (0..2)
        .map(|p| Reference {
            w: init.iter().map(|&x| x as f64).collect(),
            m: vec![0.0; 37],
            v: vec![0.0; 37],
            decay: p == 0,
        })
        .collect();
    for t in 1..=5i32 {
        let grads: Vec<Vec<f32>> = (0..2)
            .map(|p| (0..37).map(|i| (((i + p * 3 + t * 5) % 13) as f32 - 6.0) / 7.0).collect())
            .collect();
        let lr = 1e-2 / f64::from(t);
        let grad = Tensor::new(grads.concat().as_slice(), &Device::Cpu).unwrap();
        adamw_step(&state, &grad, &segments, config.scalars(t as u64, lr)).unwrap();
        for (p, reference) in refs.iter_mut().enumerate() {
            let g: Vec<f64> = grads[p].iter().map(|&x| x as f64).collect();
            reference.step(&g, t, lr, config);
        }
    }
    let master = state.get(0).unwrap().to_vec1::<f32>().unwrap();
    let masters = [&master[..37], &master[37..]];
    for (p, reference) in refs.iter().enumerate() {
        for (a, b) in masters[p].iter().zip(&reference.w) {
            assert!((*a as f64 - b).abs() < 1e-6, "{}: {a} vs {b}", names[p]);
        }
    }
    assert_ne!(masters[0], masters[1], "decay made a difference");
}

#[test]
fn clipping_scales_to_the_global_norm() {
    let norm = 5.0;
    assert!((clip_factor(norm, Some(1.0)) * norm - 1.0).abs() < 1e-5);
    assert_eq!(clip_factor(norm, Some(10.0)), 1.0);
    assert_eq!(clip_factor(norm, None), 1.0);
}

#[test]
fn schedules_warm_up_then_decay_to_the_minimum() {
    let cosine =
        Schedule { peak_lr: 8e-5, min_lr: 8e-6, warmup_steps: 5, total_steps: 100, decay: Decay::Cosine };
    assert!((cosine.lr(0) - 8e-5 / 5.0).abs() < 1e-12);
    assert!((cosine.lr(4) - 8e-5).abs() < 1e-12, "peak at the end of warmup");
    assert!((cosine.lr(99) - 8e-6).abs() < 1e-12, "minimum at the last step");
    assert!(
        (0..99).all(|s| s < 4 || cosine.lr(s + 1) <= cosine.lr(s) + 1e-15),
        "non-increasing after warmup"
    );
    let wsd = Schedule { decay: Decay::WarmupStableDecay { fraction: 0.2 }, ..cosine };
    assert!((wsd.lr(50) - 8e-5).abs() < 1e-12, "stable phase");
    assert!((wsd.lr(99) - 8e-6).abs() < 1e-12);
    assert!(wsd.lr(90) < 8e-5 && wsd.lr(90) > 8e-6);
}
