//! The fused ops' CPU bodies and their backward against candle's autograd through the same
//! formulas written with candle primitives (the model's ops before fusion): forward values
//! and the gradients of a weighted sum, in f32 and bf16, on awkward shapes.

use candle_core::{DType, Device, Tensor, Var, D};
use davinci_kernels::ops::{add_rms_norm, rms_norm, rope, rope_backward, swiglu, swiglu_backward};

fn random(shape: &[usize], seed: u64) -> Tensor {
    davinci_kernels::inputs::tensor(shape, seed, DType::F32, &Device::Cpu).unwrap()
}

/// max |a - b| / max(max |b|, 1)
fn error(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|v| v.is_finite()), "a non-finite value");
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn reference_rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let x32 = x.to_dtype(DType::F32).unwrap();
    let inv =
        (x32.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + eps).unwrap().sqrt().unwrap().recip().unwrap();
    x32.broadcast_mul(&inv).unwrap().to_dtype(x.dtype()).unwrap().broadcast_mul(w).unwrap()
}

fn reference_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let (cos, sin) = (
        cos.to_dtype(x.dtype()).unwrap().unsqueeze(1).unwrap(),
        sin.to_dtype(x.dtype()).unwrap().unsqueeze(1).unwrap(),
    );
    let half = x.dim(D::Minus1).unwrap() / 2;
    let (a, b) = (x.narrow(D::Minus1, 0, half).unwrap(), x.narrow(D::Minus1, half, half).unwrap());
    let rotated = Tensor::cat(&[&b.neg().unwrap(), &a], D::Minus1).unwrap();
    (x.broadcast_mul(&cos).unwrap() + rotated.broadcast_mul(&sin).unwrap()).unwrap()
}

/// Forward and every input's gradient of `sum(f(inputs) * probe)`, for the fused and the
/// reference function, compared at `tolerance`.
fn compare(
    what: &str,
    inputs: &[Tensor],
    fused: impl Fn(&[Tensor]) -> Tensor,
    reference: impl Fn(&[Tensor]) -> Tensor,
    tolerance: f32,
) {
    let run = |f: &dyn Fn(&[Tensor]) -> Tensor| {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&tensors);
        let probe = random(y.dims(), 99).to_dtype(y.dtype()).unwrap();
        let loss = (y.to_dtype(DType::F32).unwrap() * probe.to_dtype(DType::F32).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let grads: Vec<Tensor> = tensors.iter().map(|t| grads.get(t).expect("a gradient").clone()).collect();
        (y, grads)
    };
    let (y, grads) = run(&fused);
    let (want_y, want_grads) = run(&reference);
    let e = error(&y, &want_y);
    assert!(e <= tolerance, "{what}: forward off by {e:e}");
    for (i, (g, w)) in grads.iter().zip(&want_grads).enumerate() {
        assert_eq!(g.dtype(), w.dtype(), "{what}: gradient {i} dtype");
        let e = error(g, w);
        assert!(e <= tolerance, "{what}: gradient of input {i} off by {e:e}");
    }
}

#[test]
fn rms_norm_matches_autograd_of_the_formula() {
    for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        for shape in [vec![1, 1], vec![3, 33], vec![2, 5, 100], vec![40, 1031]] {
            let cols = *shape.last().unwrap();
            let x = random(&shape, 1).to_dtype(dtype).unwrap();
            let w = random(&[cols], 2).to_dtype(dtype).unwrap();
            compare(
                &format!("rms_norm {dtype:?} {shape:?}"),
                &[x, w],
                |t| rms_norm(&t[0], &t[1], 1e-6).unwrap(),
                |t| reference_rms_norm(&t[0], &t[1], 1e-6),
                tolerance,
            );
        }
    }
}

#[test]
fn fused_residual_add_and_rms_norm_match_autograd_of_the_formula() {
    for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        for shape in [vec![1, 1], vec![3, 33], vec![40, 1031]] {
            let cols = *shape.last().unwrap();
            let x = random(&shape, 1).to_dtype(dtype).unwrap();
            let r = random(&shape, 7).to_dtype(dtype).unwrap();
            let w = random(&[cols], 2).to_dtype(dtype).unwrap();
            // Both outputs feed the loss, as in a layer: the sum goes on, the norm is used.
            compare(
                &format!("add_rms_norm {dtype:?} {shape:?}"),
                &[x, r, w],
                |t| {
                    let (sum, normed) = add_rms_norm(&t[0], &t[1], &t[2], 1e-6).unwrap();
                    Tensor::cat(&[&sum, &normed], 0).unwrap()
                },
                |t| {
                    let sum = (&t[0] + &t[1]).unwrap();
                    let normed = reference_rms_norm(&sum, &t[2], 1e-6);
                    Tensor::cat(&[&sum, &normed], 0).unwrap()
                },
                tolerance,
            );
        }
    }
}

#[test]
fn swiglu_matches_autograd_of_the_formula() {
    for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        for shape in [vec![1], vec![7, 13], vec![3, 20000]] {
            let gate = random(&shape, 3).to_dtype(dtype).unwrap();
            let up = random(&shape, 4).to_dtype(dtype).unwrap();
            compare(
                &format!("swiglu {dtype:?} {shape:?}"),
                &[gate, up],
                |t| swiglu(&t[0], &t[1]).unwrap(),
                |t| (t[0].silu().unwrap() * &t[1]).unwrap(),
                tolerance,
            );
        }
    }
}

#[test]
fn rope_matches_autograd_of_the_formula() {
    for (dtype, tolerance) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        for (tokens, heads, head_dim) in [(1, 1, 2), (5, 3, 6), (33, 4, 64)] {
            let x = random(&[tokens, heads, head_dim], 5).to_dtype(dtype).unwrap();
            let angles = random(&[tokens, head_dim], 6);
            let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
            let (c, s) = (cos.clone(), sin.clone());
            compare(
                &format!("rope {dtype:?} {tokens}x{heads}x{head_dim}"),
                &[x],
                move |t| rope(&t[0], &c, &s).unwrap(),
                move |t| reference_rope(&t[0], &cos, &sin),
                tolerance,
            );
        }
    }
}

#[test]
fn fused_ops_refuse_mismatched_inputs() {
    let x = random(&[2, 8], 1);
    let err = rms_norm(&x, &random(&[7], 2), 1e-6).unwrap_err().to_string();
    assert!(err.contains("weight of shape [7]"), "{err}");
    let err = swiglu(&x, &random(&[2, 9], 2)).unwrap_err().to_string();
    assert!(err.contains("differ in shape"), "{err}");
    let err = rms_norm(&x, &random(&[8], 2).to_dtype(DType::BF16).unwrap(), 1e-6).unwrap_err().to_string();
    assert!(err.contains("different dtypes"), "{err}");
    let x3 = random(&[2, 1, 8], 1);
    let err = rope(&x3, &random(&[2, 6], 1), &random(&[2, 8], 1)).unwrap_err().to_string();
    assert!(err.contains("cos table"), "{err}");
    // The backward ops check their inputs as the forward ones do.
    let err = swiglu_backward(&x, &x, &random(&[2, 7], 3)).unwrap_err().to_string();
    assert!(err.contains("dy [2, 7]"), "{err}");
    let odd = random(&[2, 1, 7], 1);
    let err = rope_backward(&odd, &random(&[2, 7], 1), &random(&[2, 7], 1)).unwrap_err().to_string();
    assert!(err.contains("head_dim 7 is odd"), "{err}");
}
