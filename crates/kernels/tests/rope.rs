//! The RoPE kernels under the emulation: the forward against an f64 rotation from the same
//! tables, and the backward checked as the forward's transpose (<R x, g> = <x, R^T g>).
//! Positions restart at each document of the packed row, heads and head sizes are awkward,
//! outputs are poisoned first. Each runs with the buffers aligned for the 16-byte kernels
//! (head sizes 64 and 128; 2 and 6 take the scalar twins) and one element off.

use common::{bf16_nan, kernels_ran, relative_error, to_bits, to_f32, values, Placed};
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

/// Elements past a 16-byte boundary: the vector kernels where head_dim allows, then the
/// scalar twins.
const MISALIGN: [usize; 2] = [0, 1];

/// The forward and the backward ran the vector kernels exactly where they could.
fn expect_kernels(misalign: usize, head_dim: usize, pack: usize, suffix: &str) {
    let infix = if misalign == 0 && (head_dim / 2).is_multiple_of(pack) { "" } else { "scalar_" };
    assert_eq!(kernels_ran(), [format!("rope_fwd_{infix}{suffix}"), format!("rope_bwd_{infix}{suffix}")]);
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

#[test]
fn rope_f32_rotates_and_its_backward_is_the_transpose() {
    for ((documents, heads, head_dim), misalign) in SHAPES.into_iter().flat_map(|s| MISALIGN.map(|m| (s, m)))
    {
        let place = |v: Vec<f32>| Placed::new(&v, misalign);
        let (cos, sin) = tables(documents, head_dim);
        let (cos, sin) = (place(cos), place(sin));
        let tokens: usize = documents.iter().sum();
        let n = tokens * heads * head_dim;
        let (x, g) = (place(values(n, 1, 2.0)), place(values(n, 2, 2.0)));
        let mut y = place(vec![f32::NAN; n]);
        kernels_ran();
        rope(false, x.get(), cos.get(), sin.get(), y.get_mut(), heads, head_dim).unwrap();
        let error = relative_error(y.get(), &rotate_f64(x.get(), cos.get(), sin.get(), heads, head_dim));
        assert!(error < 1e-5, "{documents:?} {heads}x{head_dim}, {misalign} off: forward off by {error:e}");
        let mut dx = place(vec![f32::NAN; n]);
        rope(true, g.get(), cos.get(), sin.get(), dx.get_mut(), heads, head_dim).unwrap();
        expect_kernels(misalign, head_dim, 4, "f32");
        assert!(dx.get().iter().all(|v| v.is_finite()), "an element of dx left unwritten");
        let (lhs, rhs) = (dot(y.get(), g.get()), dot(x.get(), dx.get()));
        assert!((lhs - rhs).abs() <= 1e-5 * lhs.abs().max(1.0), "<Rx, g> = {lhs} but <x, R^T g> = {rhs}");
    }
}

#[test]
fn rope_bf16_matches_the_reference() {
    let nan = bf16_nan();
    for ((documents, heads, head_dim), misalign) in SHAPES.into_iter().flat_map(|s| MISALIGN.map(|m| (s, m)))
    {
        let (cos, sin) = tables(documents, head_dim);
        let (cos, sin) = (Placed::new(&cos, misalign), Placed::new(&sin, misalign));
        let (cos, sin) = (cos.get(), sin.get());
        let tokens: usize = documents.iter().sum();
        let n = tokens * heads * head_dim;
        let place = |v: Vec<u16>| Placed::new(&v, misalign);
        let (x, g) = (place(to_bits(&values(n, 3, 2.0))), place(to_bits(&values(n, 4, 2.0))));
        let mut y = place(vec![nan; n]);
        kernels_ran();
        rope(false, x.get(), cos, sin, y.get_mut(), heads, head_dim).unwrap();
        let error =
            relative_error(&to_f32(y.get()), &rotate_f64(&to_f32(x.get()), cos, sin, heads, head_dim));
        assert!(error < 1e-2, "{documents:?} {heads}x{head_dim}, {misalign} off: forward off by {error:e}");
        let mut dx = place(vec![nan; n]);
        rope(true, g.get(), cos, sin, dx.get_mut(), heads, head_dim).unwrap();
        expect_kernels(misalign, head_dim, 8, "bf16");
        // The transpose rotation is the rotation by -angle: sin negated.
        let minus_sin: Vec<f32> = sin.iter().map(|s| -s).collect();
        let want = rotate_f64(&to_f32(g.get()), cos, &minus_sin, heads, head_dim);
        let error = relative_error(&to_f32(dx.get()), &want);
        assert!(error < 1e-2, "{documents:?} {heads}x{head_dim}, {misalign} off: backward off by {error:e}");
    }
}
