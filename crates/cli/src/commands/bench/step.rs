//! `davinci bench step`: full training steps (forward, backward with recompute, AdamW) on
//! random tokens, with tokens/s, the share of time per phase and the peak heap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use davinci_dist::threads::thread_group;
use davinci_dist::{Collective, Local};
use davinci_model::layerwise::loss_and_grads;
use davinci_model::PackedLayout;
use davinci_train::human;
use davinci_train::memory::{live_bytes, peak_bytes, reset_peak};
use davinci_train::optimizer::AdamWConfig;
use davinci_train::sharded::{fresh_slices, ShardedModel};

use super::model_config;
use crate::args::{parse_device, parse_dtype};

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
    /// Ranks (threads of this process, FSDP over the in-process backend), each with a row.
    #[arg(long, default_value_t = 1)]
    world: usize,
}

#[derive(Default)]
struct Phases {
    wall: Duration,
    forward: Duration,
    head: Duration,
    backward: Duration,
    optimizer: Duration,
}

pub fn run(args: StepArgs) -> Result<()> {
    let config = model_config(&args.model, args.layers)?;
    if args.seq_len == 0 || args.docs == 0 || args.docs > args.seq_len {
        bail!("need 0 < docs <= seq_len");
    }
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
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

    let run_rank = |collective: Arc<dyn Collective>| -> Result<(Phases, usize, usize, u64)> {
        let owned = fresh_slices(&config, 0, collective.world(), collective.rank());
        let mut model = ShardedModel::from_owned(
            &config,
            owned,
            AdamWConfig::default(),
            collective.clone(),
            dtype,
            &device,
        )?;
        let mut phases = Phases::default();
        let (mut held, mut step_peak, mut bytes) = (0, 0, 0);
        for step in 0..=args.steps {
            model.zero_grads();
            held = live_bytes();
            reset_peak();
            let moved = collective.bytes_moved();
            let started = Instant::now();
            let stats =
                loss_and_grads(&model, &ids, &labels, &layout, &mut |unit| model.reduce_scatter(unit))?;
            let step_time = started.elapsed();
            step_peak = step_peak.max(peak_bytes().saturating_sub(held));
            let started = Instant::now();
            let norm = model.grad_norm()?;
            model.apply(norm, stats.count, Some(1.0), 1e-4)?;
            let optimizer_time = started.elapsed();
            if step > 0 {
                phases.forward += stats.forward;
                phases.head += stats.head;
                phases.backward += stats.backward;
                phases.optimizer += optimizer_time;
                phases.wall += step_time + optimizer_time;
                bytes += collective.bytes_moved() - moved;
            }
        }
        Ok((phases, held, step_peak, bytes))
    };
    let (phases, held, step_peak, bytes) = if args.world <= 1 {
        run_rank(Arc::new(Local))?
    } else {
        let ranks = thread_group(args.world, Duration::from_secs(600));
        let results: Vec<Result<(Phases, usize, usize, u64)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .into_iter()
                .map(|r| scope.spawn(|| run_rank(Arc::new(r) as Arc<dyn Collective>)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| bail!("a rank panicked"))).collect()
        });
        results.into_iter().next().unwrap_or_else(|| bail!("no ranks"))?
    };
    let total = phases.forward + phases.head + phases.backward + phases.optimizer;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-12);
    let tokens = (args.seq_len * args.steps * args.world.max(1)) as f64;
    println!(
        "model {} ({} layers, {} parameters), seq_len {}, {} document(s), {} on {}, {} steps",
        args.model,
        config.num_hidden_layers,
        human::count(config.num_parameters() as u64),
        args.seq_len,
        args.docs,
        args.dtype,
        args.device,
        args.steps
    );
    println!(
        "{:.0} tokens/s over {} rank(s), {:.3} s/step",
        tokens / phases.wall.as_secs_f64().max(1e-12),
        args.world.max(1),
        phases.wall.as_secs_f64() / args.steps.max(1) as f64
    );
    if args.world > 1 {
        let param_bytes = 4 * config.num_parameters() as u64;
        let per_step = bytes / args.steps.max(1) as u64;
        println!(
            "communication: {} per step gathered and reduced, {:.2}x the f32 parameter bytes \
             (ZeRO-3: about 3x, two all-gathers and one reduce-scatter)",
            human::bytes(per_step),
            per_step as f64 / param_bytes as f64
        );
    }
    println!(
        "time: forward {:.1}%, head (norm + loss) {:.1}%, backward with recompute {:.1}%, optimizer {:.1}%",
        share(phases.forward),
        share(phases.head),
        share(phases.backward),
        share(phases.optimizer)
    );
    println!(
        "heap: {} held between steps (fp32 master shards and moments); \
         the step's peak adds {} (activations, saved layer inputs, gradients in flight)",
        human::bytes(held as u64),
        human::bytes(step_peak as u64)
    );
    Ok(())
}
