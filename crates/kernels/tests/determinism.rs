//! Every kernel, run twice on the same inputs under the emulation, gives the same bits:
//! nothing is summed with atomics or in an order that depends on timing, and the
//! emulation's model of the device's transcendental functions is a function of the input,
//! as the device's are.

use common::{to_bits, values};
use davinci_kernels::adamw::Scalars;
use davinci_kernels::emulated::{
    adamw_step, cross_entropy_rows, flash_attention_bwd, flash_attention_fwd, rms_norm_bwd, rms_norm_fwd,
    rope, swiglu_bwd, swiglu_fwd, AdamwState, AttentionGrads, AttentionShape, Bf16, Kernels, Segments,
};

mod common;

/// Runs `f` twice on fresh outputs and compares what it wrote.
fn twice<T: PartialEq + std::fmt::Debug>(what: &str, f: impl Fn() -> T) {
    assert_eq!(f(), f(), "{what}: two runs differ");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn the_elementwise_and_row_kernels_repeat_bit_for_bit() {
    let (rows, cols) = (70, 96);
    let n = rows * cols;
    let (x, w, dy) =
        (to_bits(&values(n, 1, 2.0)), to_bits(&values(cols, 2, 2.0)), to_bits(&values(n, 3, 2.0)));
    twice("rms_norm", || {
        let (mut y, mut dx, mut dw) = (vec![0 as Bf16; n], vec![0 as Bf16; n], vec![0 as Bf16; cols]);
        rms_norm_fwd(&x, None, &w, &mut y, 1e-6).unwrap();
        rms_norm_bwd(&x, &w, &dy, None, &mut dx, &mut dw, 1e-6).unwrap();
        (y, dx, dw)
    });
    twice("swiglu", || {
        let (mut y, mut d_gate, mut d_up) = (vec![0 as Bf16; n], vec![0 as Bf16; n], vec![0 as Bf16; n]);
        swiglu_fwd(&x, &dy, &mut y).unwrap();
        swiglu_bwd(&x, &dy, &x, &mut d_gate, &mut d_up).unwrap();
        (y, d_gate, d_up)
    });
    let (heads, head_dim) = (3, 32);
    let tokens = n / (heads * head_dim);
    let (cos, sin) = (values(tokens * head_dim, 4, 1.0), values(tokens * head_dim, 5, 1.0));
    twice("rope", || {
        let (mut y, mut dx) = (vec![0 as Bf16; n], vec![0 as Bf16; n]);
        rope(false, &x, &cos, &sin, &mut y, heads, head_dim).unwrap();
        rope(true, &x, &cos, &sin, &mut dx, heads, head_dim).unwrap();
        (y, dx)
    });
    let logits = values(n, 6, 10.0);
    let targets: Vec<u32> = (0..rows as u32).map(|r| r % cols as u32).collect();
    twice("cross_entropy f32", || {
        let (mut d, mut loss) = (vec![0f32; n], vec![0f32; rows]);
        cross_entropy_rows(&logits, &targets, Some(&mut d), &mut loss, cols).unwrap();
        (bits(&d), bits(&loss))
    });
    let logits = to_bits(&logits);
    twice("cross_entropy bf16", || {
        let (mut d, mut loss) = (vec![0 as Bf16; n], vec![0f32; rows]);
        cross_entropy_rows(&logits, &targets, Some(&mut d), &mut loss, cols).unwrap();
        (d, bits(&loss))
    });
    let segments = [(1000, true), (3000, false)];
    let (master, grad) = (values(4000, 7, 1.0), values(4000, 8, 0.1));
    twice("adamw", || {
        let (mut w, mut m, mut v, mut copy) =
            (master.clone(), vec![0.1; 4000], vec![0.2; 4000], vec![0; 4000]);
        let state = AdamwState { master: &mut w, m: &mut m, v: &mut v, compute: Some(&mut copy) };
        adamw_step(state, &grad, &segments, 512, &Scalars::new(0.9, 0.95, 1e-8, 0.1, 3, 1e-3)).unwrap();
        (bits(&w), bits(&m), bits(&v), copy)
    });
}

/// Queries and keys in segments of their own, the last query chunk 30 keys behind the
/// key side's end (as context parallelism gives), and padding after both: the mma.sync
/// kernels, and Hopper's, whose backward adds dQ's key tiles in their turns. Hopper's run
/// over 300 keys of one segment, so that three key tiles add into each dQ tile.
#[test]
fn flash_attention_forward_and_backward_repeat_bit_for_bit() {
    let s = AttentionShape { q_tokens: 64, k_tokens: 96, q_heads: 4, kv_heads: 2, head_dim: 64 };
    attention_twice(Kernels::MmaSync, s, &[0, 5, 45, 60], &[0, 5, 75, 90]);
    let s = AttentionShape { q_tokens: 260, k_tokens: 300, q_heads: 2, kv_heads: 1, head_dim: 64 };
    attention_twice(Kernels::Hopper, s, &[0, 4, 260], &[0, 4, 300]);
}

fn attention_twice(kernels: Kernels, s: AttentionShape, cu_q: &[u32], cu_k: &[u32]) {
    let cu = Segments { q: cu_q, k: cu_k };
    let (q, k, v) = (
        to_bits(&values(s.elements(false), 1, 2.0)),
        to_bits(&values(s.elements(true), 2, 2.0)),
        to_bits(&values(s.elements(true), 3, 2.0)),
    );
    let d_out = to_bits(&values(s.elements(false), 4, 1.0));
    twice(&format!("flash attention, {kernels:?}"), || {
        let (mut out, mut lse) = (vec![0 as Bf16; q.len()], vec![0f32; s.q_heads * s.q_tokens]);
        flash_attention_fwd(kernels, s, &q, &k, &v, cu, 0.125, &mut out, &mut lse).unwrap();
        let (mut dq, mut dk, mut dv) =
            (vec![0 as Bf16; q.len()], vec![0 as Bf16; k.len()], vec![0 as Bf16; v.len()]);
        let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
        flash_attention_bwd(kernels, s, &q, &k, &v, &out, &d_out, &lse, cu, 0.125, grads).unwrap();
        (out, bits(&lse), dq, dk, dv)
    });
}
