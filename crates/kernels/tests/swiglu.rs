//! The SwiGLU kernels under the emulation against an f64 reference: lengths that are not
//! a multiple of the block, a single element, f32 and bf16, outputs poisoned first; and a
//! grid smaller than the data, so the grid-stride loop wraps (the op's own launches wrap
//! only past a million elements).

use common::{bf16_nan, relative_error, to_bits, to_f32, values};
use davinci_kernels::emulated::{swiglu_bwd, swiglu_fwd};

mod common;

/// Elements: one, less than a block, and several blocks with a partial last one.
const SHAPES: [usize; 4] = [1, 100, 1000, 4099];

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
    for n in SHAPES {
        let (gate, up, dy) = (values(n, 1, 6.0), values(n, 2, 6.0), values(n, 3, 6.0));
        let mut y = vec![f32::NAN; n];
        swiglu_fwd(&gate, &up, &mut y).unwrap();
        let (mut d_gate, mut d_up) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        swiglu_bwd(&gate, &up, &dy, &mut d_gate, &mut d_up).unwrap();
        let want = reference(&gate, &up, &dy);
        for (what, got, expected) in
            [("y", &y, &want[0]), ("d_gate", &d_gate, &want[1]), ("d_up", &d_up, &want[2])]
        {
            let error = relative_error(got, expected);
            assert!(error < 1e-5, "f32 n={n}: {what} off by {error:e}");
        }
    }
}

#[test]
fn swiglu_bf16_matches_the_reference() {
    let nan = bf16_nan();
    for n in SHAPES {
        let (gate, up, dy) =
            (to_bits(&values(n, 4, 6.0)), to_bits(&values(n, 5, 6.0)), to_bits(&values(n, 6, 6.0)));
        let mut y = vec![nan; n];
        swiglu_fwd(&gate, &up, &mut y).unwrap();
        let (mut d_gate, mut d_up) = (vec![nan; n], vec![nan; n]);
        swiglu_bwd(&gate, &up, &dy, &mut d_gate, &mut d_up).unwrap();
        let want = reference(&to_f32(&gate), &to_f32(&up), &to_f32(&dy));
        for (what, got, expected) in [
            ("y", to_f32(&y), &want[0]),
            ("d_gate", to_f32(&d_gate), &want[1]),
            ("d_up", to_f32(&d_up), &want[2]),
        ] {
            let error = relative_error(&got, expected);
            assert!(error < 1e-2, "bf16 n={n}: {what} off by {error:e}");
        }
    }
}

/// The kernel's grid-stride loop on a grid of 2 x 32 threads over 1000 elements: each
/// thread takes about sixteen, and every element is written once, as the op's launch
/// would have it.
#[test]
fn a_grid_smaller_than_the_data_covers_every_element() {
    use davinci_kernels::emulated::Host;
    use davinci_kernels::launch::{Arg, Buffer, Executor, Launch};
    let n = 1000;
    let (gate, up) = (values(n, 7, 6.0), values(n, 8, 6.0));
    let mut y = vec![f32::NAN; n];
    let launch = Launch::new("swiglu", "swiglu_fwd_f32", 2, 32)
        .buffer("gate", Buffer::host(&gate), n * 4, 4)
        .buffer("up", Buffer::host(&up), n * 4, 4)
        .buffer("y", Buffer::host_mut(&mut y), n * 4, 4)
        .arg(Arg::U64(n as u64));
    Host::default().run(&launch).unwrap();
    let want = reference(&gate, &up, &gate);
    let error = relative_error(&y, &want[0]);
    assert!(error < 1e-5, "wrapped grid: y off by {error:e}");
}
