//! Peak heap of a training step: with layer-wise recompute it grows by little more than
//! one saved layer input per extra layer, while a whole-model gradient tape grows by a
//! whole layer's activations per layer. (The only test in this binary, so that nothing
//! else allocates while it measures.)

mod common;

use candle_core::Device;
use common::collect_grads;
use davinci_model::{Config, PackedLayout, Qwen2};
use davinci_train::memory::{live_bytes, peak_bytes, reset_peak, CountingAlloc};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const TOKENS: usize = 1024;

fn model(layers: usize) -> Qwen2 {
    let mut config = Config::preset("tiny").unwrap();
    config.num_hidden_layers = layers;
    Qwen2::init(config, 5, &Device::Cpu).unwrap()
}

fn inputs() -> (Vec<u32>, Vec<i64>, PackedLayout) {
    let ids: Vec<u32> = (0..TOKENS as u32).map(|i| (i * 7919) % 2048).collect();
    let labels = ids.iter().skip(1).map(|&t| t as i64).chain([-100]).collect();
    (ids, labels, PackedLayout::from_lengths(&[TOKENS / 2, TOKENS / 2]).unwrap())
}

/// Heap the step adds on top of what was live before it, gradients excluded.
fn recompute_peak(layers: usize) -> usize {
    let model = model(layers);
    let (ids, labels, layout) = inputs();
    let before = live_bytes();
    reset_peak();
    let (_, grads) = collect_grads(&model, &ids, &labels, &layout).unwrap();
    let grad_bytes: usize = grads.values().map(|g| g.elem_count() * 4).sum();
    peak_bytes() - before - grad_bytes.min(peak_bytes() - before)
}

/// The same on one tape over the whole model.
fn tape_peak(layers: usize) -> usize {
    let (trainable, vars) = model(layers).into_trainable().unwrap();
    let (ids, labels, layout) = inputs();
    let before = live_bytes();
    reset_peak();
    let grads = trainable.loss(&ids, &labels, &layout).unwrap().backward().unwrap();
    let grad_bytes: usize = vars.iter().filter_map(|(_, v)| grads.get(v)).map(|g| g.elem_count() * 4).sum();
    peak_bytes() - before - grad_bytes.min(peak_bytes() - before)
}

#[test]
fn recompute_holds_one_layer_of_activations_whatever_the_depth() {
    let hidden = Config::preset("tiny").unwrap().hidden_size;
    let saved_input = TOKENS * hidden * 4;
    let (r2, r8) = (recompute_peak(2), recompute_peak(8));
    let (t2, t8) = (tape_peak(2), tape_peak(8));
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    eprintln!(
        "step peak above the weights, gradients excluded: recompute {:.1} -> {:.1} MiB, whole tape {:.1} -> {:.1} MiB (2 -> 8 layers)",
        mib(r2),
        mib(r8),
        mib(t2),
        mib(t8)
    );
    // Six more layers cost six saved inputs, plus slack for allocator noise.
    assert!(r8 <= r2 + 6 * saved_input + r2 / 10, "recompute: {r2} -> {r8} bytes");
    // The whole-model tape grows by far more per layer: what the recompute saves.
    assert!(t8.saturating_sub(t2) > 4 * r8.saturating_sub(r2).max(saved_input), "tape: {t2} -> {t8} bytes");
}
