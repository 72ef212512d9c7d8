//! The RoPE kernels under the emulation: the forward against an f64 rotation from the same
//! tables, and the backward checked as the forward's transpose (<R x, g> = <x, R^T g>).
//! Positions restart at each document of the packed row, heads and head sizes are awkward,
//! outputs are poisoned first.

use common::{bf16_nan, relative_error, to_bits, to_f32, values};
use davinci_kernels::emulated::rope;

mod common;

/// (document lengths, heads, head_dim)
const SHAPES: [(&[usize], usize, usize); 4] =
    [(&[1], 1, 2), (&[3, 2], 3, 6), (&[5, 1, 4], 2, 64), (&[17], 5, 128)];

/// f32 cos/sin tables for per-document positions, as the model builds them.
fn tables(documents: &[usize], head_dim: usize) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for &len in documents {
        for position in 0..len {
            // The half table twice, as transformers concatenates it.
            for _ in 0..2 {
                for i in 0..half {
                    let freq = (1.0 / 1e6f64.powf((2 * i) as f64 / head_dim as f64)) as f32;
                    let angle = position as f32 * freq;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
    }
    (cos, sin)
}

fn rotate_f64(x: &[f32], cos: &[f32], sin: &[f32], heads: usize, head_dim: usize) -> Vec<f64> {
    let half = head_dim / 2;
    let mut y = vec![0.0; x.len()];
    for (k, chunk) in x.chunks(head_dim).enumerate() {
        let token = k / heads;
        let (c, s) = (&cos[token * head_dim..], &sin[token * head_dim..]);
        for i in 0..half {
            let (a, b) = (chunk[i] as f64, chunk[i + half] as f64);
            y[k * head_dim + i] = a * c[i] as f64 - b * s[i] as f64;
            y[k * head_dim + i + half] = b * c[i + half] as f64 + a * s[i + half] as f64;
        }
    }
    y
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

#[test]
fn rope_f32_rotates_and_its_backward_is_the_transpose() {
    for (documents, heads, head_dim) in SHAPES {
        let (cos, sin) = tables(documents, head_dim);
        let tokens: usize = documents.iter().sum();
        let n = tokens * heads * head_dim;
        let (x, g) = (values(n, 1, 2.0), values(n, 2, 2.0));
        let mut y = vec![f32::NAN; n];
        rope(false, &x, &cos, &sin, &mut y, heads, head_dim).unwrap();
        let error = relative_error(&y, &rotate_f64(&x, &cos, &sin, heads, head_dim));
        assert!(error < 1e-5, "{documents:?} {heads}x{head_dim}: forward off by {error:e}");
        let mut dx = vec![f32::NAN; n];
        rope(true, &g, &cos, &sin, &mut dx, heads, head_dim).unwrap();
        assert!(dx.iter().all(|v| v.is_finite()), "an element of dx left unwritten");
        let (lhs, rhs) = (dot(&y, &g), dot(&x, &dx));
        assert!((lhs - rhs).abs() <= 1e-5 * lhs.abs().max(1.0), "<Rx, g> = {lhs} but <x, R^T g> = {rhs}");
    }
}

#[test]
fn rope_bf16_matches_the_reference() {
    let nan = bf16_nan();
    for (documents, heads, head_dim) in SHAPES {
        let (cos, sin) = tables(documents, head_dim);
        let tokens: usize = documents.iter().sum();
        let n = tokens * heads * head_dim;
        let (x, g) = (to_bits(&values(n, 3, 2.0)), to_bits(&values(n, 4, 2.0)));
        let mut y = vec![nan; n];
        rope(false, &x, &cos, &sin, &mut y, heads, head_dim).unwrap();
        let error = relative_error(&to_f32(&y), &rotate_f64(&to_f32(&x), &cos, &sin, heads, head_dim));
        assert!(error < 1e-2, "{documents:?} {heads}x{head_dim}: forward off by {error:e}");
        let mut dx = vec![nan; n];
        rope(true, &g, &cos, &sin, &mut dx, heads, head_dim).unwrap();
        // The transpose rotation is the rotation by -angle: sin negated.
        let minus_sin: Vec<f32> = sin.iter().map(|s| -s).collect();
        let want = rotate_f64(&to_f32(&g), &cos, &minus_sin, heads, head_dim);
        let error = relative_error(&to_f32(&dx), &want);
        assert!(error < 1e-2, "{documents:?} {heads}x{head_dim}: backward off by {error:e}");
    }
}
