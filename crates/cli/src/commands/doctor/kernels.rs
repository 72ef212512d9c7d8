//! Every kernel against its CPU reference (the ops' CPU bodies, themselves tested against
//! f64): on a GPU, the CUDA kernels through the ops at a real model's shapes; without one,
//! the same kernel sources under the emulation, launched as the device would launch them,
//! at small shapes.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use davinci_kernels::adamw::Scalars;
use davinci_kernels::emulated as emu;
use davinci_kernels::inputs::values;
use davinci_kernels::ops;
use davinci_model::ops::varlen_causal_attention;
use half::bf16;

use super::Check;

/// Where the kernels run.
pub enum Target {
    Emulated,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Device(Device),
}

/// The shapes the checks use.
pub struct Shapes {
    pub rows: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub loss_rows: usize,
    /// Documents of the attention check's packed row.
    pub documents: Vec<usize>,
}

impl Shapes {
    /// Small enough for the emulation to run in seconds, with every kernel's awkward parts:
    /// rows longer than a block, Qwen's vocabulary, a document past one tile.
    pub fn emulated() -> Self {
        Shapes {
            rows: 16,
            hidden: 1000,
            intermediate: 1100,
            heads: 2,
            kv_heads: 1,
            head_dim: 64,
            vocab: 151_936,
            loss_rows: 2,
            documents: vec![70, 9],
        }
    }
}

const EPS: f64 = 1e-6;
const BF16_TOLERANCE: f64 = 1e-2;

/// `values` rounded to bf16 and back, so both sides see the same inputs.
fn bf16_values(n: usize, seed: u64, range: f64) -> Vec<f32> {
    values(n, seed, range).into_iter().map(|v| bf16::from_f32(v).to_f32()).collect()
}

fn bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect()
}

fn from_bits(v: &[u16]) -> Vec<f32> {
    v.iter().map(|&b| bf16::from_bits(b).to_f32()).collect()
}

fn tensor(v: &[f32], shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(v, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
}

/// The reference's inputs: bf16 on the CPU.
fn cpu_bf16(v: &[f32], shape: &[usize]) -> Result<Tensor> {
    tensor(v, shape, DType::BF16, &Device::Cpu)
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
}

/// ||got - want|| / max(||want||, 1e-12); NaN anywhere counts as infinitely wrong.
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() || got.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum();
    let norm: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    (diff / norm.max(1e-24)).sqrt()
}

fn compare(name: &str, shape: String, outputs: &[(&str, Vec<f32>, Vec<f32>)], tolerance: f64) -> Check {
    let errors = outputs.iter().map(|(what, got, want)| (*what, relative_error(got, want)));
    let worst = errors.fold(("output", 0.0f64), |a, b| if b.1 >= a.1 || b.1.is_nan() { b } else { a });
    Check::measured(
        name,
        shape,
        worst.1 <= tolerance,
        format!("{} off by {:.1e} (at most {tolerance:.0e})", worst.0, worst.1),
    )
}

/// One kernel's comparison with its reference.
type KernelCheck = fn(&Target, &Shapes) -> Result<Check>;

/// Runs every check on `target`.
pub fn run(target: &Target, s: &Shapes) -> Vec<Check> {
    let checks: [(&str, KernelCheck); 8] = [
        ("rms_norm", rms_norm),
        ("add_rms_norm", add_rms_norm),
        ("swiglu", swiglu),
        ("rope", rope),
        ("cross_entropy", cross_entropy),
        ("cross_entropy_bf16", cross_entropy_bf16),
        ("adamw", adamw),
        ("flash_attention", flash_attention),
    ];
    // A GPU runs the attention kernels its capability selects; the emulation runs both.
    let hopper: &[(&str, KernelCheck)] = match target {
        Target::Emulated => &[("flash_attention_sm90", flash_attention_sm90)],
        Target::Device(_) => &[],
    };
    checks
        .iter()
        .chain(hopper)
        .map(|(name, check)| check(target, s).unwrap_or_else(|e| Check::failed(name, format!("{e:#}"))))
        .collect()
}

fn rms_norm(target: &Target, s: &Shapes) -> Result<Check> {
    let (n, cols) = (s.rows * s.hidden, s.hidden);
    let (x, w, dy) = (bf16_values(n, 1, 2.0), bf16_values(cols, 2, 2.0), bf16_values(n, 3, 2.0));
    let (xt, wt, dyt) =
        (cpu_bf16(&x, &[s.rows, cols])?, cpu_bf16(&w, &[cols])?, cpu_bf16(&dy, &[s.rows, cols])?);
    let want_y = host(&ops::rms_norm(&xt, &wt, EPS)?)?;
    let (want_dx, want_dw) = ops::rms_norm_backward(&xt, &wt, &dyt, EPS)?;
    let (got_y, got_dx, got_dw) = match target {
        Target::Emulated => {
            let (mut y, mut dx, mut dw) = (vec![0u16; n], vec![0u16; n], vec![0u16; cols]);
            emu::rms_norm_fwd(&bits(&x), None, &bits(&w), &mut y, EPS as f32)?;
            emu::rms_norm_bwd(&bits(&x), &bits(&w), &bits(&dy), None, &mut dx, &mut dw, EPS as f32)?;
            (from_bits(&y), from_bits(&dx), from_bits(&dw))
        }
        Target::Device(d) => {
            let (x, w, dy) = (xt.to_device(d)?, wt.to_device(d)?, dyt.to_device(d)?);
            let (dx, dw) = ops::rms_norm_backward(&x, &w, &dy, EPS)?;
            (host(&ops::rms_norm(&x, &w, EPS)?)?, host(&dx)?, host(&dw)?)
        }
    };
    let outputs = [("y", got_y, want_y), ("dx", got_dx, host(&want_dx)?), ("dw", got_dw, host(&want_dw)?)];
    Ok(compare("rms_norm", format!("{}x{cols} bf16", s.rows), &outputs, BF16_TOLERANCE))
}

fn add_rms_norm(target: &Target, s: &Shapes) -> Result<Check> {
    let (n, cols) = (s.rows * s.hidden, s.hidden);
    let (x, r, w) = (bf16_values(n, 4, 2.0), bf16_values(n, 5, 2.0), bf16_values(cols, 6, 2.0));
    let (xt, rt, wt) =
        (cpu_bf16(&x, &[s.rows, cols])?, cpu_bf16(&r, &[s.rows, cols])?, cpu_bf16(&w, &[cols])?);
    let (want_sum, want_y) = ops::add_rms_norm(&xt, &rt, &wt, EPS)?;
    let (got_sum, got_y) = match target {
        Target::Emulated => {
            let (mut sum, mut y) = (vec![0u16; n], vec![0u16; n]);
            emu::rms_norm_fwd(&bits(&x), Some((&bits(&r), &mut sum)), &bits(&w), &mut y, EPS as f32)?;
            (from_bits(&sum), from_bits(&y))
        }
        Target::Device(d) => {
            let (sum, y) = ops::add_rms_norm(&xt.to_device(d)?, &rt.to_device(d)?, &wt.to_device(d)?, EPS)?;
            (host(&sum)?, host(&y)?)
        }
    };
    let outputs = [("sum", got_sum, host(&want_sum)?), ("y", got_y, host(&want_y)?)];
    Ok(compare("add_rms_norm", format!("{}x{cols} bf16", s.rows), &outputs, BF16_TOLERANCE))
}

fn swiglu(target: &Target, s: &Shapes) -> Result<Check> {
    let n = s.rows * s.intermediate;
    let (gate, up, dy) = (bf16_values(n, 7, 6.0), bf16_values(n, 8, 6.0), bf16_values(n, 9, 2.0));
    let shape = [s.rows, s.intermediate];
    let (gt, ut, dyt) = (cpu_bf16(&gate, &shape)?, cpu_bf16(&up, &shape)?, cpu_bf16(&dy, &shape)?);
    let want_y = host(&ops::swiglu(&gt, &ut)?)?;
    let (want_dg, want_du) = ops::swiglu_backward(&gt, &ut, &dyt)?;
    let (got_y, got_dg, got_du) = match target {
        Target::Emulated => {
            let (mut y, mut dg, mut du) = (vec![0u16; n], vec![0u16; n], vec![0u16; n]);
            emu::swiglu_fwd(&bits(&gate), &bits(&up), &mut y)?;
            emu::swiglu_bwd(&bits(&gate), &bits(&up), &bits(&dy), &mut dg, &mut du)?;
            (from_bits(&y), from_bits(&dg), from_bits(&du))
        }
        Target::Device(d) => {
            let (g, u, dy) = (gt.to_device(d)?, ut.to_device(d)?, dyt.to_device(d)?);
            let (dg, du) = ops::swiglu_backward(&g, &u, &dy)?;
            (host(&ops::swiglu(&g, &u)?)?, host(&dg)?, host(&du)?)
        }
    };
    let outputs =
        [("y", got_y, want_y), ("d_gate", got_dg, host(&want_dg)?), ("d_up", got_du, host(&want_du)?)];
    Ok(compare("swiglu", format!("{}x{} bf16", s.rows, s.intermediate), &outputs, BF16_TOLERANCE))
}

fn rope(target: &Target, s: &Shapes) -> Result<Check> {
    let (tokens, heads, d) = (s.rows, s.heads, s.head_dim);
    let n = tokens * heads * d;
    let (x, dy) = (bf16_values(n, 10, 2.0), bf16_values(n, 11, 2.0));
    let angles: Vec<f32> =
        (0..tokens * d).map(|i| (i / d) as f32 * 1e-2 * ((i % (d / 2)) as f32 + 1.0)).collect();
    let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
    let table = |v: &[f32]| tensor(v, &[tokens, d], DType::F32, &Device::Cpu);
    let (ct, st) = (table(&cos)?, table(&sin)?);
    let (xt, dyt) = (cpu_bf16(&x, &[tokens, heads, d])?, cpu_bf16(&dy, &[tokens, heads, d])?);
    let (want_y, want_dx) = (host(&ops::rope(&xt, &ct, &st)?)?, host(&ops::rope_backward(&dyt, &ct, &st)?)?);
    let (got_y, got_dx) = match target {
        Target::Emulated => {
            let (mut y, mut dx) = (vec![0u16; n], vec![0u16; n]);
            emu::rope(false, &bits(&x), &cos, &sin, &mut y, heads, d)?;
            emu::rope(true, &bits(&dy), &cos, &sin, &mut dx, heads, d)?;
            (from_bits(&y), from_bits(&dx))
        }
        Target::Device(dev) => {
            let (c, s) = (ct.to_device(dev)?, st.to_device(dev)?);
            (
                host(&ops::rope(&xt.to_device(dev)?, &c, &s)?)?,
                host(&ops::rope_backward(&dyt.to_device(dev)?, &c, &s)?)?,
            )
        }
    };
    let outputs = [("y", got_y, want_y), ("dx", got_dx, want_dx)];
    Ok(compare("rope", format!("{tokens}x{heads}x{d} bf16"), &outputs, BF16_TOLERANCE))
}

fn cross_entropy(target: &Target, s: &Shapes) -> Result<Check> {
    loss_rows(target, s, DType::F32)
}

fn cross_entropy_bf16(target: &Target, s: &Shapes) -> Result<Check> {
    loss_rows(target, s, DType::BF16)
}

/// The loss rows in f32 (within 1e-5) or bf16 (within bf16's rounding of the gradient).
fn loss_rows(target: &Target, s: &Shapes, dtype: DType) -> Result<Check> {
    let (rows, vocab) = (s.loss_rows, s.vocab);
    let mut logits = match dtype {
        DType::BF16 => bf16_values(rows * vocab, 12, 8.0),
        _ => values(rows * vocab, 12, 8.0),
    };
    // Masked vocabulary entries, and a thread whose first logits are masked.
    logits
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| i % vocab < 300 || (i % vocab) % 13 == 0)
        .for_each(|(_, v)| *v = f32::NEG_INFINITY);
    let targets: Vec<u32> = (0..rows).map(|r| (vocab - 2 - 17 * r) as u32).filter(|t| t % 13 != 0).collect();
    let rows = targets.len();
    let logits = &logits[..rows * vocab];
    let (lt, tt) = (
        tensor(logits, &[rows, vocab], dtype, &Device::Cpu)?,
        Tensor::from_slice(&targets, rows, &Device::Cpu)?,
    );
    let want = ops::cross_entropy_rows(&lt, &tt, true)?;
    let (want_loss, want_grad) =
        (host(&want.loss)?, host(want.d_logits.as_ref().expect("asked for the gradient"))?);
    let (got_loss, got_grad) = match target {
        Target::Emulated => {
            let mut loss = vec![0f32; rows];
            let grad = if dtype == DType::BF16 {
                let mut grad = vec![0u16; rows * vocab];
                emu::cross_entropy_rows(&bits(logits), &targets, Some(&mut grad), &mut loss, vocab)?;
                from_bits(&grad)
            } else {
                let mut grad = vec![0f32; rows * vocab];
                emu::cross_entropy_rows(logits, &targets, Some(&mut grad), &mut loss, vocab)?;
                grad
            };
            (loss, grad)
        }
        Target::Device(d) => {
            let got = ops::cross_entropy_rows(&lt.to_device(d)?, &tt.to_device(d)?, true)?;
            (host(&got.loss)?, host(got.d_logits.as_ref().expect("asked for the gradient"))?)
        }
    };
    let outputs = [("loss", got_loss, want_loss), ("d_logits", got_grad, want_grad)];
    let (name, tolerance) =
        if dtype == DType::BF16 { ("cross_entropy_bf16", BF16_TOLERANCE) } else { ("cross_entropy", 1e-5) };
    Ok(compare(name, format!("{rows}x{vocab} {}, -inf logits", dtype.as_str()), &outputs, tolerance))
}

/// Bit for bit: the kernel does the CPU step's arithmetic operation for operation.
fn adamw(target: &Target, s: &Shapes) -> Result<Check> {
    let segments = [(s.hidden * 3 + 7, true), (s.hidden, false), (s.hidden * 5, true)];
    let n: usize = segments.iter().map(|x| x.0).sum();
    let (master, grad) = (values(n, 13, 1.0), values(n, 14, 0.1));
    let scalars = Scalars::new(0.9, 0.95, 1e-8, 0.1, 3, 1e-3);
    let moments = |seed| values(n, seed, 0.01).into_iter().map(f32::abs).collect::<Vec<_>>();
    let (m, v) = (moments(15), moments(16));
    let state: Vec<f32> = master.iter().chain(&m).chain(&v).copied().collect();
    let step = |device: &Device| -> Result<Vec<f32>> {
        let state = Tensor::from_slice(&state, (3, n), device)?;
        ops::adamw_step(&state, &Tensor::from_slice(&grad, n, device)?, &segments, scalars)?;
        host(&state)
    };
    let want = step(&Device::Cpu)?;
    let got = match target {
        Target::Emulated => {
            let (mut w, mut m2, mut v2) = (master.clone(), m.clone(), v.clone());
            let state = emu::AdamwState { master: &mut w, m: &mut m2, v: &mut v2, compute: None };
            emu::adamw_step(state, &grad, &segments, ops::ADAMW_CHUNK_LEN, &scalars)?;
            [w, m2, v2].concat()
        }
        Target::Device(d) => step(d)?,
    };
    let differing = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    Ok(Check::measured(
        "adamw",
        format!("{n} f32 in 3 segments"),
        differing == 0,
        format!("{differing} elements differ in their bits"),
    ))
}

/// The attention op on a GPU (the kernels its capability selects), or the mma.sync kernels
/// under the emulation.
fn flash_attention(target: &Target, s: &Shapes) -> Result<Check> {
    attention("flash_attention", emu::Kernels::MmaSync, target, s)
}

/// Hopper's wgmma and TMA kernels under the emulation (a GPU runs them as `flash_attention`
/// when it is an H100 or H200).
fn flash_attention_sm90(target: &Target, s: &Shapes) -> Result<Check> {
    attention("flash_attention_sm90", emu::Kernels::Hopper, target, s)
}

/// The forward and backward against the model's attention on the CPU in f32; under the
/// emulation, `kernels` says which family runs.
fn attention(name: &str, kernels: emu::Kernels, target: &Target, s: &Shapes) -> Result<Check> {
    let tokens: usize = s.documents.iter().sum();
    let (qn, kvn) = (tokens * s.heads * s.head_dim, tokens * s.kv_heads * s.head_dim);
    let (q, k, v, d_out) = (
        bf16_values(qn, 17, 1.0),
        bf16_values(kvn, 18, 1.0),
        bf16_values(kvn, 19, 1.0),
        bf16_values(qn, 20, 1.0),
    );
    let mut cu = vec![0u32];
    for &len in &s.documents {
        cu.push(cu[cu.len() - 1] + len as u32);
    }
    let scale = 1.0 / (s.head_dim as f64).sqrt();
    let (q_shape, kv_shape) = ([tokens, s.heads, s.head_dim], [tokens, s.kv_heads, s.head_dim]);
    // Forward and the gradients of <out, d_out> through the model's attention on `device`.
    let attend = |device: &Device, dtype: DType| -> Result<[Vec<f32>; 4]> {
        let var = |x: &[f32], shape: &[usize]| -> Result<Var> {
            Ok(Var::from_tensor(&tensor(x, shape, dtype, device)?)?)
        };
        let (qv, kv, vv) = (var(&q, &q_shape)?, var(&k, &kv_shape)?, var(&v, &kv_shape)?);
        let out = varlen_causal_attention(&qv, &kv, &vv, &cu, scale)?;
        let g = tensor(&d_out, &q_shape, DType::F32, device)?;
        let grads = (out.to_dtype(DType::F32)? * g)?.sum_all()?.backward()?;
        let grad = |x: &Var| -> Result<Vec<f32>> {
            host(grads.get(x).ok_or_else(|| anyhow::anyhow!("no gradient"))?)
        };
        Ok([host(&out)?, grad(&qv)?, grad(&kv)?, grad(&vv)?])
    };
    let [want_out, want_dq, want_dk, want_dv] = attend(&Device::Cpu, DType::F32)?;
    let [got_out, got_dq, got_dk, got_dv] = match target {
        Target::Emulated => {
            let shape = emu::AttentionShape::packed(tokens, s.heads, s.kv_heads, s.head_dim);
            let segments = emu::Segments::packed(&cu);
            let (qb, kb, vb) = (bits(&q), bits(&k), bits(&v));
            let (mut out, mut lse) = (vec![0u16; qn], vec![0f32; s.heads * tokens]);
            emu::flash_attention_fwd(
                kernels,
                shape,
                &qb,
                &kb,
                &vb,
                segments,
                scale as f32,
                &mut out,
                &mut lse,
            )?;
            let (mut dq, mut dk, mut dv) = (vec![0u16; qn], vec![0u16; kvn], vec![0u16; kvn]);
            let grads = emu::AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
            emu::flash_attention_bwd(
                kernels,
                shape,
                &qb,
                &kb,
                &vb,
                &out,
                &bits(&d_out),
                &lse,
                segments,
                scale as f32,
                grads,
            )?;
            [from_bits(&out), from_bits(&dq), from_bits(&dk), from_bits(&dv)]
        }
        Target::Device(d) => attend(d, DType::BF16)?,
    };
    let outputs = [
        ("out", got_out, want_out),
        ("dq", got_dq, want_dq),
        ("dk", got_dk, want_dk),
        ("dv", got_dv, want_dv),
    ];
    let shape = format!("{:?} tokens, {}/{} heads of {} bf16", s.documents, s.heads, s.kv_heads, s.head_dim);
    Ok(compare(name, shape, &outputs, 2e-2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::doctor::Status;

    fn all_pass(checks: &[Check]) {
        for c in checks {
            assert_eq!(c.status, Status::Pass, "{}: {}", c.name, c.note);
        }
    }

    /// What `davinci doctor` runs on a machine without a GPU: every kernel under the
    /// emulation against the CPU reference.
    #[test]
    fn every_kernel_under_the_emulation_matches_its_cpu_reference() {
        let checks = run(&Target::Emulated, &Shapes::emulated());
        assert_eq!(checks.len(), 9);
        all_pass(&checks);
    }

    /// A wrong result is a failure, named: the reference compared with itself shifted.
    #[test]
    fn a_kernel_off_its_reference_fails_the_check() {
        let want = vec![1.0f32, 2.0, 3.0];
        let got = vec![1.0f32, 2.0, 3.1];
        let check = compare("k", "3".into(), &[("y", got, want.clone()), ("z", want.clone(), want)], 1e-2);
        assert_eq!(check.status, Status::Fail);
        assert!(check.note.starts_with("y off by 2.7e-2"), "{}", check.note);
        let nan = compare("k", "1".into(), &[("y", vec![f32::NAN], vec![1.0])], 1e-2);
        assert_eq!(nan.status, Status::Fail);
    }

    /// On a GPU (a `cuda` build on a machine with one), the CUDA kernels through the ops
    /// at Qwen2.5-7B's head sizes, against the CPU: `scripts/gpu_check.sh` runs this.
    #[cfg(feature = "cuda")]
    #[test]
    fn every_kernel_on_the_gpu_matches_its_cpu_reference() {
        let Ok(device) = Device::new_cuda(0) else {
            eprintln!("no CUDA device: skipped");
            return;
        };
        let shapes = Shapes {
            rows: 512,
            heads: 28,
            kv_heads: 4,
            head_dim: 128,
            documents: vec![300, 212],
            ..Shapes::emulated()
        };
        all_pass(&run(&Target::Device(device), &shapes));
    }
}
