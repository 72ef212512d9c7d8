//! The doctor's checks that need a GPU (a `cuda` build): the driver against the CUDA
//! version the build targets, the device, every kernel of the fatbins, training steps
//! against the CPU, NCCL across the node's GPUs, and each kernel's speed beside its
//! static performance model's prediction. Measured figures are printed as measured,
//! predictions as predicted.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
use candle_core::cuda_backend::cudarc::driver::CudaContext;
use candle_core::cuda_backend::CudaDevice;
use candle_core::{DType, Device, Tensor};
use davinci_dist::{connect_from_env, Collective, LaunchEnv, Local};
use davinci_model::layerwise::loss_and_grads;
use davinci_model::{Config, PackedLayout};
use davinci_train::optimizer::AdamWConfig;
use davinci_train::sharded::{fresh_slices, ShardedModel};

use super::kernels::{self, Shapes, Target};
use super::Check;
use crate::args::local_cuda_ordinal;
use crate::commands::bench::kernels::{measure, model_chip, Setup};

/// GPUs the driver sees.
pub fn count() -> Result<usize> {
    Ok(CudaContext::device_count()?.max(0) as usize)
}

pub fn checks(ordinal: usize, model: &str, nccl: bool) -> Result<Vec<Check>> {
    let mut checks = vec![driver()];
    let device = Device::new_cuda(ordinal).with_context(|| format!("opening cuda:{ordinal}"))?;
    let Device::Cuda(cuda) = &device else { bail!("cuda:{ordinal} is not a CUDA device") };
    let capability = compute_capability(cuda)?;
    checks.push(describe(cuda, capability));
    checks.push(fatbins(cuda, capability));
    let config = Config::resolve(model)?;
    checks.extend(kernels::run(&Target::Device(device.clone()), &model_shapes(&config)));
    checks
        .push(training_steps(&device).unwrap_or_else(|e| Check::failed("training steps", format!("{e:#}"))));
    checks.extend(
        speed(&config, &device).unwrap_or_else(|e| vec![Check::failed("kernel speed", format!("{e:#}"))]),
    );
    // The ranks open every GPU of the node, this one included: let it go first.
    drop(device);
    checks.push(match (nccl, count()?) {
        (false, _) => Check::skipped("nccl", "--no-nccl"),
        (true, n) if n < 2 => Check::skipped("nccl", "one GPU on this node"),
        (true, n) => nccl_check(n).unwrap_or_else(|e| Check::failed("nccl", format!("{e:#}"))),
    });
    Ok(checks)
}

/// A real model's shapes: 4096 tokens of its hidden and MLP sizes, its heads, a chunk of
/// its vocabulary's logits, and a packed row of three documents for attention (small
/// enough for the CPU reference to take seconds).
fn model_shapes(config: &Config) -> Shapes {
    Shapes {
        rows: 4096,
        hidden: config.hidden_size,
        intermediate: config.intermediate_size,
        heads: config.num_attention_heads,
        kv_heads: config.num_key_value_heads,
        head_dim: config.head_dim(),
        vocab: config.vocab_size,
        loss_rows: 64,
        documents: vec![2048, 1000, 1048],
    }
}

fn driver() -> Check {
    match davinci_kernels::driver_fits() {
        Ok(line) => Check::measured("driver", String::new(), true, line),
        Err(line) => Check::failed("driver", line),
    }
}

/// The device's compute capability, (major, minor).
pub(crate) fn compute_capability(cuda: &CudaDevice) -> Result<(i32, i32)> {
    let context = cuda.cuda_stream().context().clone();
    Ok((
        context.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
        context.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
    ))
}

fn describe(cuda: &CudaDevice, (major, minor): (i32, i32)) -> Check {
    let context = cuda.cuda_stream().context().clone();
    let name = context.name().unwrap_or_else(|_| "?".into());
    let memory = context.total_mem().unwrap_or(0) as f64 / (1u64 << 30) as f64;
    let note = format!("{name}, compute capability {major}.{minor}, {memory:.0} GiB");
    if major < 8 {
        return Check::failed("device", format!("{note}: the kernels need compute capability 8.0 or newer"));
    }
    Check::info("device", note)
}

/// Every kernel the launch code names (the emulation's tables list them), loaded from the
/// fatbins on this device: a cubin for its architecture, or PTX the driver compiles.
/// Sources named `*_sm90` hold sm_90a code alone, which only a Hopper GPU runs.
fn fatbins(cuda: &CudaDevice, capability: (i32, i32)) -> Check {
    let mut loaded = 0;
    for source in davinci_kernels::fatbin_sources() {
        if source.ends_with("_sm90")
            && !davinci_kernels::launch::runs_sm90a(capability.0 as u32, capability.1 as u32)
        {
            continue;
        }
        for name in davinci_kernels::emulated::kernel_names(source) {
            if let Err(e) = davinci_kernels::load_kernel(cuda, source, &name) {
                return Check::failed("fatbins", format!("{source}.cu: {name}: {e}"));
            }
            loaded += 1;
        }
    }
    Check::measured("fatbins", String::new(), true, format!("{loaded} kernels loaded"))
}

/// Three steps of Qwen2.5-0.5B's shape cut to 2 layers (head size 64, so attention runs
/// the flash kernels) on 512 tokens of two documents: bf16 on the GPU against f32 on the
/// CPU, from the same weights.
fn training_steps(device: &Device) -> Result<Check> {
    let mut config = Config::preset("qwen2.5-0.5b")?;
    config.num_hidden_layers = 2;
    let tokens = 512;
    let ids: Vec<u32> = (0..tokens as u64).map(|t| (t * 7919 % config.vocab_size as u64) as u32).collect();
    let labels: Vec<i64> = ids.iter().skip(1).map(|&t| t as i64).chain([-100]).collect();
    let layout = PackedLayout::from_lengths(&[300, 212])?;
    let losses = |device: &Device, dtype: DType| -> Result<Vec<f64>> {
        let owned = fresh_slices(&config, 0, 1, 0);
        let collective: Arc<dyn Collective> = Arc::new(Local);
        let mut model =
            ShardedModel::from_owned(&config, owned, AdamWConfig::default(), collective, dtype, device)?;
        let mut losses = Vec::new();
        for _ in 0..3 {
            model.zero_grads();
            let stats =
                loss_and_grads(&model, &ids, &labels, &layout, &mut |unit| model.reduce_scatter(unit))?;
            let norm = model.grad_norm()?;
            model.apply(norm, stats.count, Some(1.0), 1e-3)?;
            losses.push(stats.loss_sum / stats.count.max(1) as f64);
        }
        Ok(losses)
    };
    let (gpu, cpu) = (losses(device, DType::BF16)?, losses(&Device::Cpu, DType::F32)?);
    // A NaN loss is infinitely far (f64::max would drop it).
    let apart = |(g, c): (&f64, &f64)| {
        let d = (g - c).abs() / c.abs().max(1e-12);
        if d.is_finite() {
            d
        } else {
            f64::INFINITY
        }
    };
    let worst = gpu.iter().zip(&cpu).map(apart).fold(0.0, f64::max);
    let note = format!(
        "losses {} on the GPU, {} on the CPU; at most {worst:.1e} apart (bf16: 2e-2)",
        list(&gpu),
        list(&cpu)
    );
    Ok(Check::measured("training steps", "qwen2.5-0.5b x2 layers, 512 tokens".into(), worst <= 2e-2, note))
}

fn list(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.4}")).collect::<Vec<_>>().join(" ")
}

/// All-reduce and all-gather across the node's GPUs: one process a GPU, started by
/// `davinci launch`, each running [`nccl_rank`].
fn nccl_check(gpus: usize) -> Result<Check> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .args(["launch", "--nproc", &gpus.to_string(), "--", "doctor", "--nccl-rank"])
        .output()
        .context("starting the NCCL ranks")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let summary = text.lines().rev().find(|l| l.starts_with("nccl:")).unwrap_or("no result").to_string();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Ok(Check::failed("nccl", format!("{summary}; {last}")));
    }
    Ok(Check::measured("nccl", format!("{gpus} GPUs"), true, summary.trim_start_matches("nccl: ").into()))
}

/// One rank of the NCCL check: every rank contributes `rank + 1` to an all-reduce and its
/// rank to an all-gather; rank 0 prints the result and the all-reduce's measured bus
/// bandwidth on 256 MiB.
pub fn nccl_rank() -> Result<()> {
    let env = LaunchEnv::from_vars(|name| std::env::var(name).ok())?.context("run under `davinci launch`")?;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let device = Device::new_cuda(local_cuda_ordinal(env.local_rank, visible.as_deref()))?;
    let collective = connect_from_env("doctor-nccl", Duration::from_secs(120), &device)?;
    let (rank, world) = (collective.rank(), collective.world());
    let mine = Tensor::full((rank + 1) as f32, 1 << 20, &device)?;
    let summed: Vec<f32> = collective.all_reduce_tensor(&mine)?.to_vec1()?;
    collective.confirm_outputs()?;
    let want = (world * (world + 1) / 2) as f32;
    if summed.iter().any(|&v| v != want) {
        bail!("rank {rank}: the all-reduce gave {} where {want} was due", summed[0])
    }
    let gathered: Vec<f32> =
        collective.all_gather_tensor(&Tensor::full(rank as f32, 4, &device)?)?.to_vec1()?;
    collective.confirm_outputs()?;
    let expected: Vec<f32> = (0..world).flat_map(|r| [r as f32; 4]).collect();
    if gathered != expected {
        bail!("rank {rank}: the all-gather gave {gathered:?}")
    }
    let big = Tensor::ones(64 << 20, DType::F32, &device)?;
    collective.all_reduce_tensor(&big)?.to_vec1::<f32>().map(|_| ())?;
    let started = std::time::Instant::now();
    let rounds = 5;
    for _ in 0..rounds {
        collective.all_reduce_tensor(&big)?;
    }
    device.synchronize()?;
    let seconds = started.elapsed().as_secs_f64() / rounds as f64;
    collective.confirm_outputs()?;
    // A ring all-reduce moves 2 (n - 1) / n of the buffer through each GPU's link.
    let bus = (256u64 << 20) as f64 * 2.0 * (world as f64 - 1.0) / world as f64 / seconds / 1e9;
    if rank == 0 {
        println!("nccl: all-reduce and all-gather correct on {world} GPUs; all-reduce of 256 MiB {bus:.0} GB/s bus bandwidth (measured)");
    }
    Ok(())
}

/// A measurement passes from half of the static model's prediction up (the model assumes
/// perfect overlap, so it is an upper estimate); above 1.2 times it, the note asks to
/// check the byte or flop count.
const OF_PREDICTION: (f64, f64) = (0.5, 1.2);

/// Each kernel timed at the model's shapes (`bench kernels`, without its unfused
/// baselines), beside the static performance model's prediction for this chip.
fn speed(config: &Config, device: &Device) -> Result<Vec<Check>> {
    let chip = model_chip(device)?;
    let setup =
        Setup { config, tokens: 8192, docs: 1, dtype: DType::BF16, device, iters: 10, unfused: false };
    let (measured, copy_gbs) = measure(&setup)?;
    let mut checks = vec![Check::info("device copy", format!("{copy_gbs:.0} GB/s (measured)"))];
    for m in measured {
        let Some((value, prediction, unit)) = m.versus_model(chip) else {
            let figure =
                m.tflops.map_or(format!("{:.2} of a copy", m.of_copy), |t| format!("{t:.1} TFLOP/s"));
            checks.push(Check::info(m.name, format!("{figure} (measured); no prediction for this chip")));
            continue;
        };
        let mut note =
            format!("{:.1}% {unit} (measured), {:.1}% predicted", value * 100.0, prediction * 100.0);
        if value > OF_PREDICTION.1 * prediction {
            note.push_str("; above the prediction: check the byte or flop count");
        }
        checks.push(Check::measured(m.name, m.shape, value >= OF_PREDICTION.0 * prediction, note));
    }
    Ok(checks)
}
