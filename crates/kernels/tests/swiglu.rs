//! The SwiGLU kernels under the emulation against an f64 reference: lengths that are not
//! a multiple of the grid (so the grid-stride loop wraps), a single element, f32 and bf16,
//! outputs poisoned first.

use davinci_kernels::emulated::{swiglu_bwd, swiglu_fwd, Bf16};
use half::bf16;

/// (elements, blocks, threads)
const SHAPES: [(usize, usize, usize); 4] = [(1, 1, 32), (100, 2, 32), (1000, 3, 64), (4099, 2, 128)];

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 12.0 - 6.0) as f32
        })
        .collect()
}

/// y, d_gate, d_up in f64.
fn reference(gate: &[f32], up: &[f32], dy: &[f32]) -> [Vec<f64>; 3] {
    let mut out = [Vec::new(), Vec::new(), Vec::new()];
    for i in 0..gate.len() {
        let (g, u, d) = (gate[i] as f64, up[i] as f64, dy[i] as f64);
        let sg = 1.0 / (1.0 + (-g).exp());
        out[0].push(g * sg * u);
        out[1].push(d * u * sg * (1.0 + g * (1.0 - sg)));
        out[2].push(d * g * sg);
    }
    out
}

fn relative_error(a: &[f32], b: &[f64]) -> f64 {
    assert!(a.iter().all(|v| v.is_finite()), "a non-finite output (an element left unwritten?)");
    let diff: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm.max(1.0)).sqrt()
}

#[test]
fn swiglu_f32_matches_the_reference() {
    for (n, blocks, threads) in SHAPES {
        let (gate, up, dy) = (values(n, 1), values(n, 2), values(n, 3));
        let mut y = vec![f32::NAN; n];
        swiglu_fwd(&gate, &up, &mut y, blocks, threads);
        let (mut d_gate, mut d_up) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        swiglu_bwd(&gate, &up, &dy, &mut d_gate, &mut d_up, blocks, threads);
        let want = reference(&gate, &up, &dy);
        for (what, got, expected) in
            [("y", &y, &want[0]), ("d_gate", &d_gate, &want[1]), ("d_up", &d_up, &want[2])]
        {
            let error = relative_error(got, expected);
            assert!(error < 1e-5, "f32 n={n} ({blocks}x{threads}): {what} off by {error:e}");
        }
    }
}

#[test]
fn swiglu_bf16_matches_the_reference() {
    let to_bits = |v: &[f32]| v.iter().map(|&f| bf16::from_f32(f).to_bits()).collect::<Vec<Bf16>>();
    let to_f32 = |v: &[Bf16]| v.iter().map(|&b| bf16::from_bits(b).to_f32()).collect::<Vec<f32>>();
    let nan = bf16::NAN.to_bits();
    for (n, blocks, threads) in SHAPES {
        let (gate, up, dy) = (to_bits(&values(n, 4)), to_bits(&values(n, 5)), to_bits(&values(n, 6)));
        let mut y = vec![nan; n];
        swiglu_fwd(&gate, &up, &mut y, blocks, threads);
        let (mut d_gate, mut d_up) = (vec![nan; n], vec![nan; n]);
        swiglu_bwd(&gate, &up, &dy, &mut d_gate, &mut d_up, blocks, threads);
        let want = reference(&to_f32(&gate), &to_f32(&up), &to_f32(&dy));
        for (what, got, expected) in [
            ("y", to_f32(&y), &want[0]),
            ("d_gate", to_f32(&d_gate), &want[1]),
            ("d_up", to_f32(&d_up), &want[2]),
        ] {
            let error = relative_error(&got, expected);
            assert!(error < 1e-2, "bf16 n={n} ({blocks}x{threads}): {what} off by {error:e}");
        }
    }
}
