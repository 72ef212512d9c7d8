//! Gradient buffers: flat f32, one per parameter in the optimizer's order, filled by the
//! step's sink and turned into an AdamW update (mean over loss tokens, clipping).

use crate::error::{Result, TrainError};
use crate::optimizer::{clip_factor, sum_of_squares, AdamW, ParamState};

pub struct GradBuffers {
    values: Vec<Vec<f32>>,
}

impl GradBuffers {
    pub fn for_params(params: &[ParamState]) -> Self {
        Self { values: params.iter().map(|p| vec![0.0; p.master.len()]).collect() }
    }

    pub fn zero(&mut self) {
        self.values.iter_mut().for_each(|g| g.fill(0.0));
    }

    /// Adds `values` into buffer `i` (a reduce-scattered shard).
    pub fn add_slice(&mut self, i: usize, values: &[f32]) -> Result<()> {
        let buffer = self.values.get_mut(i).filter(|b| b.len() == values.len()).ok_or_else(|| {
            TrainError::Invalid(format!("a gradient shard of {} values for buffer {i}", values.len()))
        })?;
        buffer.iter_mut().zip(values).for_each(|(g, v)| *g += v);
        Ok(())
    }

    /// The sum of squares of every element, in f64 (the square of this rank's norm).
    pub fn sum_of_squares(&self) -> f64 {
        sum_of_squares(&self.slices())
    }

    pub fn slices(&self) -> Vec<&[f32]> {
        self.values.iter().map(Vec::as_slice).collect()
    }

    /// One optimizer update from gradients of a loss *sum* over `count` tokens whose norm
    /// (over all ranks) is `sum_norm`: divides by `count`, clips the mean's norm to `clip`
    /// (when given) and steps. Returns the mean's norm before clipping; refuses a
    /// non-finite one, leaving the weights as they were.
    pub fn apply(
        &mut self,
        optimizer: &mut AdamW,
        sum_norm: f64,
        count: usize,
        clip: Option<f64>,
        lr: f64,
    ) -> Result<f64> {
        let norm = sum_norm / count.max(1) as f64;
        if !norm.is_finite() {
            return Err(TrainError::Invalid(format!("the gradient norm is {norm}")));
        }
        let factor = (clip_factor(norm, clip) / count.max(1) as f64) as f32;
        self.values.iter_mut().for_each(|g| g.iter_mut().for_each(|x| *x *= factor));
        optimizer.step(&self.slices(), lr);
        Ok(norm)
    }
}
