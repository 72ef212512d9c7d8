//! Learning-rate schedules: linear warmup then cosine decay (the paper's), or
//! warmup-stable-decay.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Decay {
    /// Cosine from the peak to the minimum over the steps after warmup.
    Cosine,
    /// Constant at the peak, then linear to the minimum over the last `fraction` of steps.
    WarmupStableDecay { fraction: f64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub peak_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-based): warmup reaches the peak at its
    /// last step, the decay reaches `min_lr` at the last step of the schedule.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / (decay_steps.saturating_sub(1).max(1)) as f64).min(1.0);
        match self.decay {
            Decay::Cosine => {
                self.min_lr + 0.5 * (self.peak_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Decay::WarmupStableDecay { fraction } => {
                let stable = 1.0 - fraction.clamp(0.0, 1.0);
                if t <= stable {
                    self.peak_lr
                } else {
                    let u = (t - stable) / (1.0 - stable).max(f64::MIN_POSITIVE);
                    self.peak_lr + (self.min_lr - self.peak_lr) * u
                }
            }
        }
    }
}
