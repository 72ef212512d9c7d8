//! `davinci bench kernels`: each fused op at a model's shapes on the chosen device (the CPU
//! reference bodies on a machine without a GPU, the CUDA kernels with `--device cuda`).
//!
//! Per kernel: the median time, the bytes it must move (inputs read once, outputs written
//! once), the achieved GB/s, that bandwidth as a fraction of a plain device copy timed in
//! the same run (the memory roofline these elementwise and row kernels live under), and
//! the speedup over the same formula written with unfused candle primitives. On a GPU the
//! static performance model knows (A100, H100), each kernel's measured fraction of peak (or
//! of the copy) is printed beside the model's prediction for it.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use candle_core::Var;
use candle_core::{DType, Device, Tensor, D};
use davinci_kernels::adamw::Scalars;
use davinci_kernels::ops;
use davinci_kernels::predicted::{self, Chip};
use davinci_model::ops::attention::reference;
use davinci_model::ops::{default_chunk_tokens, varlen_causal_attention, Rotary};
use davinci_model::Config;

use super::model_config;
use crate::args::{parse_device, parse_dtype};

#[derive(clap::Args)]
pub struct KernelArgs {
    /// A preset, a checkpoint directory or a Hub name: the shapes come from its config.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// Tokens in the batch (rows of the activations).
    #[arg(long, default_value_t = 2048)]
    tokens: usize,
    /// Timed runs of each kernel, after one untimed warmup; the median is reported.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Documents in the packed row, of equal length, for attention.
    #[arg(long, default_value_t = 1)]
    docs: usize,
    /// Element type of the activations and the loss's logits (AdamW always runs in f32;
    /// attention runs in f32 on the CPU and bf16 on a GPU, the types its paths take).
    #[arg(long, default_value = "f32")]
    dtype: String,
}

type Run<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// A timed run's result, dropped: only the time counts.
fn discard<T>(_result: T) -> Result<()> {
    Ok(())
}

/// One row of the table.
struct Case<'a> {
    name: &'static str,
    shape: String,
    bytes: f64,
    /// Matrix flops, for the kernels that are about them (attention); 0 for the others.
    flops: f64,
    fused: Run<'a>,
    unfused: Option<Run<'a>>,
}

fn random(shape: &[usize], seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(davinci_kernels::inputs::tensor(shape, seed, dtype, device)?)
}

/// Median wall time of `iters` runs after a warmup, synchronising the device each time.
fn time(run: &mut Run<'_>, iters: usize, device: &Device) -> Result<Duration> {
    run()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let started = Instant::now();
        run()?;
        device.synchronize()?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// One kernel's timing.
pub struct Measured {
    pub name: &'static str,
    pub shape: String,
    pub seconds: f64,
    pub gbs: f64,
    /// The bandwidth as a fraction of the device copy's.
    pub of_copy: f64,
    /// For the kernels that are about matrix flops (attention).
    pub tflops: Option<f64>,
    /// The unfused formula's time over the fused op's.
    pub versus_unfused: Option<f64>,
    /// The static performance model's kernel (or sum of kernels) for this case.
    pub model: Option<String>,
}

impl Measured {
    /// The measured fraction beside the model's prediction, in the same unit: of the
    /// chip's dense bf16 peak for attention, of the device copy for the memory-bound rest.
    pub fn versus_model(&self, chip: Option<Chip>) -> Option<(f64, f64, &'static str)> {
        let chip = chip?;
        let prediction = predicted::predicted(&predicted::on_chip(self.model.as_deref()?, &chip), chip.arch)?;
        Some(match self.tflops {
            Some(tflops) => (tflops / chip.dense_bf16_tflops, prediction, "of peak"),
            None => (self.of_copy, prediction / predicted::COPY_EFFICIENCY, "of copy"),
        })
    }
}

/// The chip the performance model predicts for, when `device` is a GPU it knows.
pub fn model_chip(device: &Device) -> Result<Option<Chip>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        let (major, minor) = crate::commands::doctor::gpu::compute_capability(cuda)?;
        return Ok(predicted::chip(major, minor));
    }
    let _ = device;
    Ok(None)
}

/// What to time: a model's shapes on a device.
pub struct Setup<'a> {
    pub config: &'a Config,
    pub tokens: usize,
    pub docs: usize,
    pub dtype: DType,
    pub device: &'a Device,
    pub iters: usize,
    /// Also time the unfused formulas (`bench kernels` does; `doctor` does not need them,
    /// and unfused attention at a big model's shapes may not fit in memory).
    pub unfused: bool,
}

/// Times every kernel, and a device copy as the bandwidth reference (GB/s).
pub fn measure(setup: &Setup<'_>) -> Result<(Vec<Measured>, f64)> {
    let (config, t, device) = (setup.config, setup.tokens, setup.device);
    if t == 0 {
        bail!("--tokens must be positive");
    }
    let activations = Activations::new(config, t, setup.dtype, device)?;
    let mut cases = norm_cases(&activations)?;
    cases.extend(swiglu_cases(&activations)?);
    cases.extend(rope_cases(&activations)?);
    cases.push(loss_case(&activations)?);
    cases.extend(attention_cases(config, t, setup.docs, device)?);
    cases.push(adamw_case(config, device)?);
    let copy_gbs = copy_bandwidth(setup.iters, device)?;
    let mut measured = Vec::with_capacity(cases.len());
    for mut case in cases {
        let seconds = time(&mut case.fused, setup.iters, device)?.as_secs_f64();
        let gbs = case.bytes / seconds / 1e9;
        let versus_unfused = match case.unfused.as_mut().filter(|_| setup.unfused) {
            Some(unfused) => Some(time(unfused, setup.iters, device)?.as_secs_f64() / seconds),
            None => None,
        };
        measured.push(Measured {
            name: case.name,
            shape: case.shape,
            seconds,
            gbs,
            of_copy: gbs / copy_gbs,
            tflops: (case.flops > 0.0).then(|| case.flops / seconds / 1e12),
            versus_unfused,
            model: predicted::model_kernel(case.name, config.head_dim(), setup.dtype == DType::BF16),
        });
    }
    Ok((measured, copy_gbs))
}

pub fn run(args: KernelArgs) -> Result<()> {
    let config = model_config(&args.model, None)?;
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let setup = Setup {
        config: &config,
        tokens: args.tokens,
        docs: args.docs,
        dtype,
        device: &device,
        iters: args.iters,
        unfused: true,
    };
    let (measured, copy_gbs) = measure(&setup)?;
    let chip = model_chip(&device)?;
    println!(
        "model {} (hidden {}, intermediate {}, {} heads of {}, vocab {}), {} tokens, {} on {}",
        args.model,
        config.hidden_size,
        config.intermediate_size,
        config.num_attention_heads,
        config.head_dim(),
        config.vocab_size,
        args.tokens,
        args.dtype,
        args.device
    );
    println!("device copy (the bandwidth reference): {copy_gbs:.1} GB/s");
    match chip {
        Some(chip) => println!(
            "performance model: {} ({}); the last column is measured / predicted",
            chip.name, chip.arch
        ),
        None => println!("performance model: no prediction for this device (it predicts for A100 and H100)"),
    }
    println!(
        "{:<20} {:<26} {:>11} {:>9} {:>9} {:>9} {:>11}  measured / predicted",
        "kernel", "shape", "median", "GB/s", "of copy", "TFLOP/s", "vs unfused"
    );
    for m in measured {
        let tflops = m.tflops.map_or("-".into(), |t| format!("{t:.3}"));
        let versus = m.versus_unfused.map_or("-".into(), |v| format!("{v:.2}x"));
        let model = m.versus_model(chip).map_or("-".into(), |(measured, predicted, unit)| {
            format!("{:.1}% / {:.1}% {unit} (predicted)", measured * 100.0, predicted * 100.0)
        });
        println!(
            "{:<20} {:<26} {:>8.3} ms {:>9.1} {:>8.2}x {:>9} {:>11}  {}",
            m.name,
            m.shape,
            m.seconds * 1e3,
            m.gbs,
            m.of_copy,
            tflops,
            versus,
            model
        );
    }
    Ok(())
}

/// The roofline reference: GB/s of a device copy of 64 MiB on the CPU (32 read, 32
/// written), 1 GiB on a GPU, where a small copy would time the launch and not the memory.
fn copy_bandwidth(iters: usize, device: &Device) -> Result<f64> {
    let floats = if device.is_cuda() { 128 << 20 } else { 8 << 20 };
    let source = random(&[floats], 9, DType::F32, device)?;
    let mut copy: Run = Box::new(|| discard(source.copy()?));
    let seconds = time(&mut copy, iters, device)?.as_secs_f64();
    Ok((8 * floats) as f64 / seconds / 1e9)
}

/// What the elementwise and row kernels read, made once; their cases borrow it.
struct Activations {
    dtype: DType,
    eps: f64,
    /// `[tokens, hidden]`: the input, the norm's weight `[hidden]`, a gradient.
    x: Tensor,
    w: Tensor,
    dy: Tensor,
    /// `[tokens, intermediate]`: the MLP's gate and up projections and a gradient.
    gate: Tensor,
    up: Tensor,
    d_mlp: Tensor,
    /// `[tokens, heads, head_dim]` queries and the rotary tables for positions `0..tokens`.
    q: Tensor,
    cos: Tensor,
    sin: Tensor,
    /// One chunk of logits `[rows, vocab]` in the activations' dtype, as the chunked head
    /// runs it, and targets.
    logits: Tensor,
    targets: Tensor,
}

impl Activations {
    fn new(config: &Config, t: usize, dtype: DType, device: &Device) -> Result<Self> {
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let (heads, hd, vocab) = (config.num_attention_heads, config.head_dim(), config.vocab_size);
        let positions: Vec<u32> = (0..t as u32).collect();
        let rotary = Rotary::new(&positions, hd, config.rope_theta, device)?;
        let rows = t.min(default_chunk_tokens(vocab));
        let targets: Vec<u32> = (0..rows as u64).map(|r| (r * 7919 % vocab as u64) as u32).collect();
        Ok(Self {
            dtype,
            eps: config.rms_norm_eps,
            x: random(&[t, h], 1, dtype, device)?,
            w: random(&[h], 2, dtype, device)?,
            dy: random(&[t, h], 3, dtype, device)?,
            gate: random(&[t, inter], 4, dtype, device)?,
            up: random(&[t, inter], 5, dtype, device)?,
            d_mlp: random(&[t, inter], 6, dtype, device)?,
            q: random(&[t, heads, hd], 7, dtype, device)?,
            cos: rotary.cos().clone(),
            sin: rotary.sin().clone(),
            logits: random(&[rows, vocab], 8, dtype, device)?,
            targets: Tensor::from_vec(targets, rows, device)?,
        })
    }

    /// Bytes of one element of the activations.
    fn element(&self) -> f64 {
        self.dtype.size_in_bytes() as f64
    }
}

/// RMSNorm forward, with the residual add, and backward, over `[tokens, hidden]`.
fn norm_cases(a: &Activations) -> Result<Vec<Case<'_>>> {
    let ((t, h), e, eps) = (a.x.dims2()?, a.element(), a.eps);
    Ok(vec![
        Case {
            name: "rms_norm fwd",
            shape: format!("{t}x{h}"),
            flops: 0.0,
            bytes: e * (2 * t * h + h) as f64,
            fused: Box::new(move || discard(ops::rms_norm(&a.x, &a.w, eps)?)),
            unfused: Some(Box::new(move || {
                let x32 = a.x.to_dtype(DType::F32)?;
                let inv = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
                discard(x32.broadcast_mul(&inv)?.to_dtype(a.dtype)?.broadcast_mul(&a.w)?)
            })),
        },
        Case {
            name: "add+rms_norm fwd",
            shape: format!("{t}x{h}"),
            flops: 0.0,
            bytes: e * (4 * t * h + h) as f64,
            fused: Box::new(move || discard(ops::add_rms_norm(&a.x, &a.dy, &a.w, eps)?)),
            unfused: Some(Box::new(move || {
                let sum = (&a.x + &a.dy)?;
                discard((ops::rms_norm(&sum, &a.w, eps)?, sum))
            })),
        },
        Case {
            name: "rms_norm bwd",
            shape: format!("{t}x{h}"),
            flops: 0.0,
            bytes: e * (3 * t * h + 2 * h) as f64 + e * (t * h) as f64,
            fused: Box::new(move || discard(ops::rms_norm_backward(&a.x, &a.w, &a.dy, eps)?)),
            unfused: None,
        },
    ])
}

/// SwiGLU forward and backward over `[tokens, intermediate]`.
fn swiglu_cases(a: &Activations) -> Result<Vec<Case<'_>>> {
    let ((t, inter), e) = (a.gate.dims2()?, a.element());
    Ok(vec![
        Case {
            name: "swiglu fwd",
            shape: format!("{t}x{inter}"),
            flops: 0.0,
            bytes: e * (3 * t * inter) as f64,
            fused: Box::new(move || discard(ops::swiglu(&a.gate, &a.up)?)),
            unfused: Some(Box::new(move || discard((a.gate.silu()? * &a.up)?))),
        },
        Case {
            name: "swiglu bwd",
            shape: format!("{t}x{inter}"),
            flops: 0.0,
            bytes: e * (5 * t * inter) as f64,
            fused: Box::new(move || discard(ops::swiglu_backward(&a.gate, &a.up, &a.d_mlp)?)),
            unfused: None,
        },
    ])
}

/// RoPE forward and backward over the query heads.
fn rope_cases(a: &Activations) -> Result<Vec<Case<'_>>> {
    let (t, heads, hd) = a.q.dims3()?;
    let bytes = a.element() * (2 * t * heads * hd) as f64 + 4.0 * (2 * t * hd) as f64;
    Ok(vec![
        Case {
            name: "rope fwd",
            shape: format!("{t}x{heads}x{hd}"),
            flops: 0.0,
            bytes,
            fused: Box::new(move || discard(ops::rope(&a.q, &a.cos, &a.sin)?)),
            unfused: Some(Box::new(move || {
                let c = a.cos.to_dtype(a.dtype)?.unsqueeze(1)?;
                let s = a.sin.to_dtype(a.dtype)?.unsqueeze(1)?;
                let half = hd / 2;
                let rotated = Tensor::cat(
                    &[&a.q.narrow(D::Minus1, half, half)?.neg()?, &a.q.narrow(D::Minus1, 0, half)?],
                    D::Minus1,
                )?;
                discard((a.q.broadcast_mul(&c)? + rotated.broadcast_mul(&s)?)?)
            })),
        },
        Case {
            name: "rope bwd",
            shape: format!("{t}x{heads}x{hd}"),
            flops: 0.0,
            bytes,
            fused: Box::new(move || discard(ops::rope_backward(&a.q, &a.cos, &a.sin)?)),
            unfused: None,
        },
    ])
}

/// The loss's per-row cross-entropy over one chunk of logits: read once (the kernels read
/// them twice), the gradient written once, in the logits' dtype; the losses in f32.
fn loss_case(a: &Activations) -> Result<Case<'_>> {
    let (rows, vocab) = a.logits.dims2()?;
    let (logits, targets) = (&a.logits, &a.targets);
    Ok(Case {
        name: "cross-entropy rows",
        shape: format!("{rows}x{vocab} {}", logits.dtype().as_str()),
        flops: 0.0,
        bytes: a.element() * (2 * rows * vocab) as f64 + 8.0 * rows as f64,
        fused: Box::new(move || discard(ops::cross_entropy_rows(logits, targets, true)?)),
        unfused: Some(Box::new(move || {
            let max = logits.max_keepdim(D::Minus1)?;
            let shifted = logits.broadcast_sub(&max)?;
            let log_norm = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
            let picked = shifted.gather(&targets.unsqueeze(1)?, D::Minus1)?;
            let loss = (log_norm.clone() - picked)?;
            let probs = shifted.broadcast_sub(&log_norm)?.exp()?;
            let minus_one = Tensor::full(-1f32, (rows, 1), logits.device())?.to_dtype(logits.dtype())?;
            discard((loss, probs.scatter_add(&targets.unsqueeze(1)?, &minus_one, D::Minus1)?))
        })),
    })
}

/// Attention over a packed row of `docs` equal documents: forward, and forward with
/// backward, with flops counted as FlashAttention counts them (causal: half of
/// `4 * len^2 * head_dim` per head and document; the backward 2.5 times the forward). The
/// unfused baseline is the reference attention from candle primitives.
fn attention_cases<'a>(
    config: &Config,
    tokens: usize,
    docs: usize,
    device: &Device,
) -> Result<Vec<Case<'a>>> {
    if docs == 0 || docs > tokens {
        bail!("--docs must be between 1 and the token count");
    }
    let (heads, kv_heads, hd) = (config.num_attention_heads, config.num_key_value_heads, config.head_dim());
    let dtype = if device.is_cuda() { DType::BF16 } else { DType::F32 };
    let mut cu = vec![0u32];
    for d in 0..docs {
        cu.push(((d + 1) * tokens / docs) as u32);
    }
    let flops: f64 =
        cu.windows(2).map(|w| (w[1] - w[0]) as f64).map(|l| 2.0 * l * l * hd as f64).sum::<f64>()
            * heads as f64;
    let q = random(&[tokens, heads, hd], 11, dtype, device)?;
    let k = random(&[tokens, kv_heads, hd], 12, dtype, device)?;
    let v = random(&[tokens, kv_heads, hd], 13, dtype, device)?;
    let probe = random(&[tokens, heads, hd], 14, dtype, device)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let shape = format!("{tokens}x{heads}/{kv_heads}x{hd}, {docs} doc(s)");
    let bytes = (dtype.size_in_bytes() * tokens * (2 * heads + 2 * kv_heads) * hd) as f64;
    let (q2, k2, v2, cu2) = (q.clone(), k.clone(), v.clone(), cu.clone());
    let forward: Run<'a> = Box::new(move || discard(varlen_causal_attention(&q2, &k2, &v2, &cu2, scale)?));
    let (q3, k3, v3, cu3) = (q.clone(), k.clone(), v.clone(), cu.clone());
    let unfused: Run<'a> = Box::new(move || {
        discard(reference::attention(&q3, &k3, &v3, &davinci_model::ops::Segments::documents(&cu3), scale)?)
    });
    let backward: Run<'a> = Box::new(move || {
        let vars = [&q, &k, &v].map(Var::from_tensor);
        let [qv, kv, vv] = vars;
        let (qv, kv, vv) = (qv?, kv?, vv?);
        let y = varlen_causal_attention(qv.as_tensor(), kv.as_tensor(), vv.as_tensor(), &cu, scale)?;
        discard((y * &probe)?.sum_all()?.backward()?)
    });
    Ok(vec![
        Case {
            name: "attention fwd",
            shape: shape.clone(),
            bytes,
            flops,
            fused: forward,
            unfused: Some(unfused),
        },
        Case {
            name: "attention fwd+bwd",
            shape,
            bytes: 3.0 * bytes,
            flops: 3.5 * flops,
            fused: backward,
            unfused: None,
        },
    ])
}

/// AdamW over one decoder layer's parameters as one flat fp32 shard on the device, as
/// FSDP's optimizer steps it: the CPU reference on the CPU, the multi-tensor kernel on a GPU.
fn adamw_case<'a>(config: &Config, device: &Device) -> Result<Case<'a>> {
    let (h, inter, kv) =
        (config.hidden_size, config.intermediate_size, config.num_key_value_heads * config.head_dim());
    let segments = vec![
        (h * h + h, true),
        (2 * (h * kv + kv), true),
        (h * h, true),
        (3 * h * inter, true),
        (2 * h, false),
    ];
    let n: usize = segments.iter().map(|s| s.0).sum();
    let scalars = Scalars::new(0.9, 0.95, 1e-8, 0.1, 10, 1e-4);
    let state =
        Tensor::cat(&[Tensor::full(0.1f32, (1, n), device)?, Tensor::zeros((2, n), DType::F32, device)?], 0)?;
    let grad = Tensor::full(1e-3f32, n, device)?;
    let fused: Run<'a> = Box::new(move || Ok(ops::adamw_step(&state, &grad, &segments, scalars)?));
    // Read master, m, v and the gradient; write master, m and v.
    let bytes = (7 * 4 * n) as f64;
    Ok(Case { name: "adamw", shape: format!("{n} f32"), bytes, flops: 0.0, fused, unfused: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(name: &'static str, tflops: Option<f64>, of_copy: f64, model: Option<&str>) -> Measured {
        Measured {
            name,
            shape: String::new(),
            seconds: 1.0,
            gbs: 1.0,
            of_copy,
            tflops,
            versus_unfused: None,
            model: model.map(String::from),
        }
    }

    /// On an H100 the attention op runs Hopper's kernels, so their prediction is the one
    /// printed; on an A100 the mma.sync kernels'.
    #[test]
    fn attention_is_set_against_the_chips_peak_and_memory_kernels_against_the_copy() {
        let h100 = predicted::chip(9, 0);
        let forward = measured("attention fwd", Some(494.5), 0.1, Some("flash_attention_fwd_d128"));
        let (fraction, prediction, unit) = forward.versus_model(h100).expect("a prediction");
        assert!((fraction - 0.5).abs() < 1e-9, "{fraction}");
        assert_eq!(Some(prediction), predicted::predicted("flash_attention_fwd_sm90_d128", "sm_90a"));
        assert_eq!(unit, "of peak");
        let (_, prediction, _) = forward.versus_model(predicted::chip(8, 0)).expect("a prediction");
        assert_eq!(Some(prediction), predicted::predicted("flash_attention_fwd_d128", "sm_80"));

        let adamw = measured("adamw", None, 0.8, Some("adamw_step"));
        let (fraction, prediction, unit) = adamw.versus_model(h100).expect("a prediction");
        assert_eq!((fraction, unit), (0.8, "of copy"));
        let model = predicted::predicted("adamw_step", "sm_90a").expect("adamw is modelled");
        assert!((prediction - model / predicted::COPY_EFFICIENCY).abs() < 1e-12);
    }

    #[test]
    fn no_prediction_without_a_known_chip_or_a_modelled_kernel() {
        let forward = measured("attention fwd", Some(100.0), 0.1, Some("flash_attention_fwd_d128"));
        assert_eq!(forward.versus_model(None), None);
        assert_eq!(forward.versus_model(predicted::chip(8, 9)), None);
        let fused = measured("add+rms_norm fwd", None, 0.5, None);
        assert_eq!(fused.versus_model(predicted::chip(8, 0)), None);
    }
}
