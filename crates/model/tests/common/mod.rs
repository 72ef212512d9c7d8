//! Shared helpers of the model's integration tests: the committed transformers fixtures
//! and tolerance checks.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use davinci_model::{load_checkpoint, Qwen2};

pub use davinci_testing::{model_fixture, MODEL_FIXTURES};

pub fn load_fixture_model(name: &str) -> Qwen2 {
    load_checkpoint(&model_fixture(name), &Device::Cpu, Some(DType::F32)).expect("fixture checkpoint loads")
}

/// transformers' outputs for the fixture: `input_ids.N`, `labels.N`, `logits.N`, `loss.N`,
/// `grad.N.<name>`.
pub struct Expected(pub HashMap<String, Tensor>);

impl Expected {
    pub fn load(name: &str) -> Self {
        let path = model_fixture(name).join("expected.safetensors");
        Self(candle_core::safetensors::load(&path, &Device::Cpu).expect("expected.safetensors loads"))
    }

    pub fn tensor(&self, key: &str) -> &Tensor {
        self.0.get(key).unwrap_or_else(|| panic!("fixture has no `{key}`"))
    }

    pub fn sequences(&self) -> usize {
        self.0.keys().filter(|k| k.starts_with("input_ids.")).count()
    }

    pub fn input_ids(&self, n: usize) -> Vec<u32> {
        let ids: Vec<i64> = self.tensor(&format!("input_ids.{n}")).to_vec1().unwrap();
        ids.into_iter().map(|i| i as u32).collect()
    }

    pub fn labels(&self, n: usize) -> Vec<i64> {
        self.tensor(&format!("labels.{n}")).to_vec1().unwrap()
    }

    pub fn loss(&self, n: usize) -> f32 {
        self.tensor(&format!("loss.{n}")).to_scalar().unwrap()
    }
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Fails unless `actual` and `expected` have the same shape and every element differs by
/// at most `rel` times the largest magnitude in `expected`. NaN never passes.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, rel: f32) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let (a, e) = (flat(actual), flat(expected));
    let scale = e.iter().fold(0f32, |m, x| m.max(x.abs())).max(f32::MIN_POSITIVE);
    let (worst, at) = a
        .iter()
        .zip(&e)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold((0f32, 0), |(w, i), (j, d)| if d > w || d.is_nan() { (d, j) } else { (w, i) });
    assert!(
        a.iter().all(|x| x.is_finite()) && worst <= rel * scale,
        "{what}: max |diff| {worst:e} at {at} exceeds {rel:e} x max |expected| {scale:e}"
    );
}
