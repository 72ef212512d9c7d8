//! The SwiGLU kernels under the emulation against an f64 reference: lengths that are not
//! a multiple of the block or of the 16-byte pack, a single element, f32 and bf16, with the
//! buffers aligned for the 16-byte kernels and one element off (their scalar twins),
//! outputs poisoned first; and a grid smaller than the data, so the grid-stride loop wraps
//! (the op's own launches wrap only past a million elements).

use common::{bf16_nan, kernels_ran, relative_error, to_bits, to_f32, values, Placed};
use davinci_kernels::emulated::{swiglu_bwd, swiglu_fwd};

mod common;

/// Elements: one, less than a block, and several blocks with a partial last one (100 and
/// 4099 are not a multiple of the pack).
const SHAPES: [usize; 4] = [1, 100, 1000, 4099];
/// Elements past a 16-byte boundary: the vector kernels, then their scalar twins.
const MISALIGN: [usize; 2] = [0, 1];

/// The kernels a forward and a backward ran: vector ones for aligned buffers.
fn expect_kernels(misalign: usize, suffix: &str) {
    let infix = if misalign == 0 { "" } else { "scalar_" };
    assert_eq!(kernels_ran(), [format!("swiglu_fwd_{infix}{suffix}"), format!("swiglu_bwd_{infix}{suffix}")]);
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

#[test]
fn swiglu_f32_matches_the_reference() {
    for (n, misalign) in SHAPES.into_iter().flat_map(|n| MISALIGN.map(|m| (n, m))) {
        let place = |v: Vec<f32>| Placed::new(&v, misalign);
        let (gate, up, dy) = (place(values(n, 1, 6.0)), place(values(n, 2, 6.0)), place(values(n, 3, 6.0)));
        let mut y = place(vec![f32::NAN; n]);
        kernels_ran();
        swiglu_fwd(gate.get(), up.get(), y.get_mut()).unwrap();
        let (mut d_gate, mut d_up) = (place(vec![f32::NAN; n]), place(vec![f32::NAN; n]));
        swiglu_bwd(gate.get(), up.get(), dy.get(), d_gate.get_mut(), d_up.get_mut()).unwrap();
        expect_kernels(misalign, "f32");
        let want = reference(gate.get(), up.get(), dy.get());
        for (what, got, expected) in
            [("y", y.get(), &want[0]), ("d_gate", d_gate.get(), &want[1]), ("d_up", d_up.get(), &want[2])]
        {
            let error = relative_error(got, expected);
            assert!(error < 1e-5, "f32 n={n}, {misalign} off: {what} off by {error:e}");
        }
    }
}

#[test]
fn swiglu_bf16_matches_the_reference() {
    let nan = bf16_nan();
    for (n, misalign) in SHAPES.into_iter().flat_map(|n| MISALIGN.map(|m| (n, m))) {
        let place = |v: Vec<u16>| Placed::new(&v, misalign);
        let (gate, up, dy) = (
            place(to_bits(&values(n, 4, 6.0))),
            place(to_bits(&values(n, 5, 6.0))),
            place(to_bits(&values(n, 6, 6.0))),
        );
        let mut y = place(vec![nan; n]);
        kernels_ran();
        swiglu_fwd(gate.get(), up.get(), y.get_mut()).unwrap();
        let (mut d_gate, mut d_up) = (place(vec![nan; n]), place(vec![nan; n]));
        swiglu_bwd(gate.get(), up.get(), dy.get(), d_gate.get_mut(), d_up.get_mut()).unwrap();
        expect_kernels(misalign, "bf16");
        let want = reference(&to_f32(gate.get()), &to_f32(up.get()), &to_f32(dy.get()));
        for (what, got, expected) in [
            ("y", to_f32(y.get()), &want[0]),
            ("d_gate", to_f32(d_gate.get()), &want[1]),
            ("d_up", to_f32(d_up.get()), &want[2]),
        ] {
            let error = relative_error(&got, expected);
            assert!(error < 1e-2, "bf16 n={n}, {misalign} off: {what} off by {error:e}");
        }
    }
}

/// The kernels' grid-stride loop on a grid of 2 x 32 threads over 1003 elements: each
/// thread takes about four packs of 4 (or sixteen elements in the scalar twin), the first
/// block's threads the 3 past the last pack, and every element is written once.
#[test]
fn a_grid_smaller_than_the_data_covers_every_element() {
    use davinci_kernels::emulated::Host;
    use davinci_kernels::launch::{Arg, Buffer, Executor, Launch};
    let n = 1003;
    let (gate, up) = (Placed::new(&values(n, 7, 6.0), 0), Placed::new(&values(n, 8, 6.0), 0));
    for (kernel, align) in [("swiglu_fwd_f32", 16), ("swiglu_fwd_scalar_f32", 4)] {
        let mut y = Placed::new(&vec![f32::NAN; n], 0);
        let launch = Launch::new("swiglu", kernel, 2, 32)
            .buffer("gate", Buffer::host(gate.get()), n * 4, align)
            .buffer("up", Buffer::host(up.get()), n * 4, align)
            .buffer("y", Buffer::host_mut(y.get_mut()), n * 4, align)
            .arg(Arg::U64(n as u64));
        Host::default().run(&launch).unwrap();
        let want = reference(gate.get(), up.get(), gate.get());
        let error = relative_error(y.get(), &want[0]);
        assert!(error < 1e-5, "{kernel} on a wrapped grid: y off by {error:e}");
    }
}
