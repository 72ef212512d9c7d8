//! The multi-tensor AdamW kernel under the emulation against the CPU update the trainer
//! runs: bit-identical master weights and moments over several steps, segments of awkward
//! lengths with and without weight decay, chunks that end mid-block, and the bf16 copy, in
//! the 4-wide kernel and its scalar twin.

use common::{bf16_nan, kernels_ran, values, Placed};
use davinci_kernels::adamw::{plan_chunks, update_segments_cpu, Scalars};
use davinci_kernels::emulated::{adamw_step, AdamwState};
use half::bf16;

mod common;

/// With the arrays aligned for the 4-wide kernel (chunks starting anywhere: their first
/// and last elements go one a thread) and one element off (the scalar twin).
#[test]
fn adamw_kernel_takes_the_cpu_steps_bit_for_bit() {
    for misalign in [0, 1] {
        steps_bit_for_bit(misalign);
    }
}

fn steps_bit_for_bit(misalign: usize) {
    let segments = [(1usize, false), (37, true), (300, true), (64, false), (129, true)];
    let n: usize = segments.iter().map(|s| s.0).sum();
    let chunks = plan_chunks(&segments, 100);
    assert!(chunks.iter().all(|c| c.len <= 100) && chunks.len() > segments.len(), "segments are cut");
    let master = values(n, 1, 1.0);
    let place = |v: &[f32]| Placed::new(v, misalign);
    let (mut gpu_w, mut gpu_m, mut gpu_v) = (place(&master), place(&vec![0.0; n]), place(&vec![0.0; n]));
    let (mut cpu_w, mut cpu_m, mut cpu_v) = (master, vec![0.0f32; n], vec![0.0f32; n]);
    let kernel = if misalign == 0 { "adamw_step" } else { "adamw_step_scalar" };
    for step in 1..=4u64 {
        let grad = place(&values(n, 10 + step, 0.5));
        let lr = 1e-3 * step as f64;
        let scalars = Scalars::new(0.9, 0.95, 1e-8, 0.1, step, lr);
        let mut compute = Placed::new(&vec![bf16_nan(); n], misalign);
        let state = AdamwState {
            master: gpu_w.get_mut(),
            m: gpu_m.get_mut(),
            v: gpu_v.get_mut(),
            compute: Some(compute.get_mut()),
        };
        kernels_ran();
        adamw_step(state, grad.get(), &segments, 100, &scalars).unwrap();
        assert_eq!(kernels_ran(), [kernel]);
        update_segments_cpu(&mut cpu_w, &mut cpu_m, &mut cpu_v, grad.get(), &segments, &scalars);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(gpu_w.get()), bits(&cpu_w), "master weights after step {step} ({kernel})");
        assert_eq!(bits(gpu_m.get()), bits(&cpu_m), "first moments after step {step} ({kernel})");
        assert_eq!(bits(gpu_v.get()), bits(&cpu_v), "second moments after step {step} ({kernel})");
        let expected: Vec<u16> = cpu_w.iter().map(|&w| bf16::from_f32(w).to_bits()).collect();
        assert_eq!(compute.get(), expected, "bf16 copy after step {step} ({kernel})");
    }
    // Decay reached exactly the decayed segments: with a zero gradient, only they move.
    let zero = vec![0.0; n];
    let before = gpu_w.get().to_vec();
    let scalars = Scalars::new(0.9, 0.95, 1e-8, 0.1, 5, 1e-2);
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    adamw_step(
        AdamwState { master: gpu_w.get_mut(), m: &mut m, v: &mut v, compute: None },
        &zero,
        &segments,
        100,
        &scalars,
    )
    .unwrap();
    let mut at = 0;
    for &(len, decays) in &segments {
        let moved = (at..at + len).any(|i| gpu_w.get()[i] != before[i]);
        assert_eq!(moved, decays, "segment at {at} (decays: {decays}, {kernel})");
        at += len;
    }
}

/// The in-place op FSDP's optimizer runs on a shard's `[3, n]` state tensor takes the same
/// steps as the CPU update on separate buffers, and refuses a state it cannot step.
#[test]
fn the_in_place_op_on_a_state_tensor_takes_the_cpu_steps() {
    use candle_core::{Device, Tensor};
    use davinci_kernels::ops::adamw_step as step_in_place;

    // The last segment spans several of the chunks that the op shares among threads.
    let segments = [(5usize, true), (1, false), (150_000, true)];
    let n: usize = segments.iter().map(|s| s.0).sum();
    let master = values(n, 3, 1.0);
    let mut initial = master.clone();
    initial.extend(vec![0.0f32; 2 * n]);
    let state = Tensor::from_vec(initial, (3, n), &Device::Cpu).unwrap();
    let (mut w, mut m, mut v) = (master, vec![0.0f32; n], vec![0.0f32; n]);
    for step in 1..=3u64 {
        let grad = values(n, 20 + step, 0.5);
        let scalars = Scalars::new(0.9, 0.95, 1e-8, 0.1, step, 1e-3);
        step_in_place(&state, &Tensor::new(grad.as_slice(), &Device::Cpu).unwrap(), &segments, scalars)
            .unwrap();
        update_segments_cpu(&mut w, &mut m, &mut v, &grad, &segments, &scalars);
        let rows = state.to_vec2::<f32>().unwrap();
        assert_eq!(rows, vec![w.clone(), m.clone(), v.clone()], "state after step {step}");
    }
    let grad = Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu).unwrap();
    let scalars = Scalars::new(0.9, 0.95, 1e-8, 0.1, 4, 1e-3);
    let short = step_in_place(&state, &grad, &segments[..2], scalars).unwrap_err();
    assert!(short.to_string().contains("segments cover 6 of 150006"), "{short}");
    let strided = Tensor::zeros((n, 3), candle_core::DType::F32, &Device::Cpu).unwrap().t().unwrap();
    let err = step_in_place(&strided, &grad, &segments, scalars).unwrap_err();
    assert!(err.to_string().contains("contiguous"), "{err}");
}
