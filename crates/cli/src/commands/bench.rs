//! `davinci bench step`: full training steps (forward, backward with recompute, AdamW) on
//! random tokens, with tokens/s, the share of time per phase and the peak heap.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use candle_core::Device;
use davinci_model::checkpoint::CONFIG_FILE;
use davinci_model::{resolve_model_dir, Config, PackedLayout, Qwen2, PRESETS};
use davinci_train::grads::GradBuffers;
use davinci_train::memory::{live_bytes, peak_bytes, reset_peak};
use davinci_train::optimizer::{AdamW, AdamWConfig};
use davinci_train::step::loss_and_grads_into;
use davinci_train::trainer::weights::{model_from_masters, params_from_model};

use crate::device::{parse_device, parse_dtype};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Time full training steps of a model on random tokens.
    Step(StepArgs),
}

#[derive(clap::Args)]
pub struct StepArgs {
    /// A preset, a checkpoint directory or a Hub name (its config; weights are random).
    #[arg(long)]
    model: String,
    #[arg(long, default_value_t = 2048)]
    seq_len: usize,
    /// Override the number of layers (to fit a big model's shape on a small machine).
    #[arg(long)]
    layers: Option<usize>,
    /// Documents packed into the row (equal lengths).
    #[arg(long, default_value_t = 1)]
    docs: usize,
    /// Timed steps, after one untimed warmup step.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Step(args) => step(args),
    }
}

#[derive(Default)]
struct Phases {
    forward: Duration,
    head: Duration,
    backward: Duration,
    optimizer: Duration,
}

fn step(args: StepArgs) -> Result<()> {
    let mut config = if PRESETS.contains(&args.model.to_ascii_lowercase().as_str()) {
        Config::preset(&args.model)?
    } else {
        Config::from_file(&resolve_model_dir(&args.model)?.join(CONFIG_FILE))?
    };
    if let Some(layers) = args.layers {
        config.num_hidden_layers = layers;
    }
    if args.seq_len == 0 || args.docs == 0 || args.docs > args.seq_len {
        bail!("need 0 < docs <= seq_len");
    }
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let params = params_from_model(&Qwen2::init(config.clone(), 0, &Device::Cpu)?)?;
    let mut optimizer = AdamW::new(AdamWConfig::default(), params);
    let mut grads = GradBuffers::for_params(&optimizer.params);
    let vocab = config.vocab_size as u64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let ids: Vec<u32> = (0..args.seq_len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % vocab) as u32
        })
        .collect();
    let labels: Vec<i64> = ids.iter().skip(1).map(|&t| t as i64).chain([-100]).collect();
    let base = args.seq_len / args.docs;
    let mut lengths = vec![base; args.docs];
    lengths[0] += args.seq_len - base * args.docs;
    let layout = PackedLayout::from_lengths(&lengths)?;

    let mut phases = Phases::default();
    let mut held = 0;
    let mut step_peak = 0;
    for step in 0..=args.steps {
        let model = model_from_masters(&config, &optimizer.params, dtype, &device)?;
        grads.zero();
        held = live_bytes();
        reset_peak();
        let stats = loss_and_grads_into(&model, &ids, &labels, &layout, &mut |n, g| grads.add(n, g))?;
        step_peak = step_peak.max(peak_bytes().saturating_sub(held));
        let started = Instant::now();
        grads.apply(&mut optimizer, stats.count, Some(1.0), 1e-4)?;
        let optimizer_time = started.elapsed();
        if step > 0 {
            phases.forward += stats.forward;
            phases.head += stats.head;
            phases.backward += stats.backward;
            phases.optimizer += optimizer_time;
        }
    }
    let total = phases.forward + phases.head + phases.backward + phases.optimizer;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-12);
    let tokens = (args.seq_len * args.steps) as f64;
    println!(
        "model {} ({} layers, {:.1}M parameters), seq_len {}, {} document(s), {} on {}, {} steps",
        args.model,
        config.num_hidden_layers,
        config.num_parameters() as f64 / 1e6,
        args.seq_len,
        args.docs,
        args.dtype,
        args.device,
        args.steps
    );
    println!(
        "{:.0} tokens/s, {:.3} s/step",
        tokens / total.as_secs_f64().max(1e-12),
        total.as_secs_f64() / args.steps.max(1) as f64
    );
    println!(
        "time: forward {:.1}%, head (norm + loss) {:.1}%, backward with recompute {:.1}%, optimizer {:.1}%",
        share(phases.forward),
        share(phases.head),
        share(phases.backward),
        share(phases.optimizer)
    );
    let mib = |b: usize| b as f64 / (1u64 << 20) as f64;
    println!(
        "heap: {:.1} MiB held between steps (weights, masters, moments, gradient buffers); \
         the step's peak adds {:.1} MiB (activations, saved layer inputs, gradients in flight)",
        mib(held),
        mib(step_peak)
    );
    Ok(())
}
