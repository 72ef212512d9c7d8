//! `davinci bench step`: full training steps (forward, backward with recompute unless
//! `--keep-activations`, AdamW) on
//! random tokens, with tokens/s, the share of time per phase and the peak heap. With
//! `--context N`, groups of N ranks share each row (context parallelism), and the same row
//! on one rank is measured too, as the baseline of the memory per rank.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use davinci_data::loader::{Batch, IGNORE};
use davinci_dist::threads::thread_group;
use davinci_dist::{Collective, Local};
use davinci_model::layerwise::{loss_and_grads_with, Activations};
use davinci_model::Config;
use davinci_train::context::ContextGroup;
use davinci_train::human;
use davinci_train::memory::{
    live_bytes, peak_bytes, reset_peak, reset_thread_peak, thread_live_bytes, thread_peak_bytes,
};
use davinci_train::optimizer::AdamWConfig;
use davinci_train::sharded::{fresh_slices, ShardedModel};

use super::{model_config, StepShapeArgs};
use crate::args::{parse_device, parse_dtype};

#[derive(clap::Args)]
pub struct StepArgs {
    /// A preset, a checkpoint directory or a Hub name (its config; weights are random).
    #[arg(long)]
    model: String,
    #[command(flatten)]
    shape: StepShapeArgs,
    /// Timed steps, after one untimed warmup step.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Print the figures as JSON (with `peak_bytes`, the measured peak heap per rank,
    /// which `davinci plan --model ...` predicts), without the one-rank baseline.
    #[arg(long)]
    json: bool,
    /// Keep every layer's activations from the forward instead of recomputing each layer
    /// in the backward (no activation checkpointing, as PyTorch eager trains): a third
    /// less work for the activations of every layer at once.
    #[arg(long)]
    keep_activations: bool,
}

#[derive(Default)]
struct Phases {
    wall: Duration,
    forward: Duration,
    head: Duration,
    backward: Duration,
    optimizer: Duration,
}

/// What one rank measured: time per phase, the heap held between steps, the step's peak
/// above it, and the bytes its collectives moved.
struct Measured {
    phases: Phases,
    held: usize,
    step_peak: usize,
    /// The same counted on the rank's own thread.
    rank_held: isize,
    rank_step_peak: isize,
    bytes: u64,
}

pub fn run(args: StepArgs) -> Result<()> {
    let config = model_config(&args.model, args.shape.layers)?;
    args.shape.check()?;
    let world = args.shape.world();
    let row = random_row(&config, &args.shape.doc_lengths());
    let measured = measure(&args, &config, &row, world, args.shape.context)?;
    let phases = &measured.phases;
    let total = phases.forward + phases.head + phases.backward + phases.optimizer;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-12);
    let tokens = (args.shape.seq_len * args.steps * world / args.shape.context) as f64;
    // The ranks are threads of one process: the heap is theirs together, shared evenly.
    let (held, step_peak) = (measured.held / world, measured.step_peak / world);
    if args.json {
        let report = serde_json::json!({
            "world": world,
            "context": args.shape.context,
            "seq_len": args.shape.seq_len,
            "layers": config.num_hidden_layers,
            "tokens_per_s": tokens / phases.wall.as_secs_f64().max(1e-12),
            "held_bytes": held,
            "step_peak_bytes": step_peak,
            // Rank 0's own: what it held between steps and the most above it during one.
            // One rank: the process's. Several: counted on the rank's thread (the process's
            // peak divided among the ranks is lower: their peaks do not coincide), which
            // misses what rayon's workers hold on the rank's behalf while they run its ops.
            "peak_bytes": if world == 1 {
                (held + step_peak) as isize
            } else {
                measured.rank_held + measured.rank_step_peak
            },
        });
        println!("{report}");
        return Ok(());
    }
    println!(
        "model {} ({} layers, {} parameters), seq_len {}, {} document(s), {} on {}, {} steps",
        args.model,
        config.num_hidden_layers,
        human::count(config.num_parameters() as u64),
        args.shape.seq_len,
        args.shape.docs,
        args.shape.dtype,
        args.shape.device,
        args.steps
    );
    let grid =
        if args.shape.context > 1 { format!(" ({} per row)", args.shape.context) } else { String::new() };
    println!(
        "{:.0} tokens/s over {world} rank(s){grid}, {:.3} s/step",
        tokens / phases.wall.as_secs_f64().max(1e-12),
        phases.wall.as_secs_f64() / args.steps.max(1) as f64
    );
    if world > 1 {
        let param_bytes = 4 * config.num_parameters() as u64;
        let per_step = measured.bytes / args.steps.max(1) as u64;
        println!(
            "communication: {} per step gathered and reduced, {:.2}x the f32 parameter bytes \
             (ZeRO-3: about 3x, two all-gathers and one reduce-scatter; context parallelism adds its keys and values)",
            human::bytes(per_step),
            per_step as f64 / param_bytes as f64
        );
    }
    println!(
        "time: forward {:.1}%, head (norm + loss) {:.1}%, backward{} {:.1}%, optimizer {:.1}%",
        share(phases.forward),
        share(phases.head),
        if args.keep_activations { "" } else { " with recompute" },
        share(phases.backward),
        share(phases.optimizer)
    );
    println!(
        "heap per rank (the ranks are threads of this process; their heap divided evenly): {} held \
         between steps (fp32 master shards and moments); the step's peak adds {} (activations, \
         saved layer inputs, gradients in flight)",
        human::bytes(held as u64),
        human::bytes(step_peak as u64)
    );
    if args.shape.context > 1 {
        let alone = measure(&args, &config, &row, 1, 1)?;
        let ratio = measured.step_peak as f64 / world as f64 / alone.step_peak.max(1) as f64;
        println!(
            "context parallelism: the step's peak per rank is {ratio:.2}x that of one rank holding the whole row \
             ({}; an even split would be 1/{} = {:.2}x)",
            human::bytes(alone.step_peak as u64),
            args.shape.context,
            1.0 / args.shape.context as f64
        );
    }
    Ok(())
}

/// One row of random tokens in documents of the given lengths.
fn random_row(config: &Config, docs: &[usize]) -> Batch {
    let seq_len = docs.iter().sum();
    let vocab = config.vocab_size as u64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let input_ids: Vec<u32> = (0..seq_len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % vocab) as u32
        })
        .collect();
    let labels: Vec<i64> = input_ids.iter().skip(1).map(|&t| t as i64).chain([IGNORE]).collect();
    let mut cu_seqlens = vec![0u32];
    for (d, &len) in docs.iter().enumerate() {
        cu_seqlens.push(cu_seqlens[d] + len as u32);
    }
    let position_ids = cu_seqlens.windows(2).flat_map(|w| 0..w[1] - w[0]).collect();
    Batch { rows: 1, seq_len, input_ids, labels, position_ids, cu_seqlens, row_tokens: vec![seq_len] }
}

/// Runs the steps on `world` ranks in groups of `context` sharing `row`: rank 0's figures.
fn measure(args: &StepArgs, config: &Config, row: &Batch, world: usize, context: usize) -> Result<Measured> {
    let device = parse_device(&args.shape.device)?;
    let dtype = parse_dtype(&args.shape.dtype)?;
    let run_rank = |collective: Arc<dyn Collective>| -> Result<Measured> {
        let owned = fresh_slices(config, 0, collective.world(), collective.rank());
        let mut model = ShardedModel::from_owned(
            config,
            owned,
            AdamWConfig::default(),
            collective.clone(),
            dtype,
            &device,
        )?;
        let share = ContextGroup::new(&collective, context)?.share(row)?;
        let mut out = Measured {
            phases: Phases::default(),
            held: 0,
            step_peak: 0,
            rank_held: 0,
            rank_step_peak: 0,
            bytes: 0,
        };
        for step in 0..=args.steps {
            model.zero_grads();
            out.held = live_bytes();
            out.rank_held = thread_live_bytes();
            reset_peak();
            reset_thread_peak();
            let moved = collective.bytes_moved();
            let started = Instant::now();
            let activations = if args.keep_activations { Activations::Keep } else { Activations::Recompute };
            let stats = loss_and_grads_with(
                &model,
                &share.input_ids,
                &share.labels,
                &share.layout,
                activations,
                &mut |unit| model.reduce_scatter(unit),
            )?;
            let step_time = started.elapsed();
            out.step_peak = out.step_peak.max(peak_bytes().saturating_sub(out.held));
            out.rank_step_peak = out.rank_step_peak.max(thread_peak_bytes() - out.rank_held);
            let started = Instant::now();
            let norm = model.grad_norm()?;
            let mut count = [stats.count as f64];
            collective.all_reduce(&mut count)?;
            model.apply(norm, count[0] as usize, Some(1.0), 1e-4)?;
            let optimizer_time = started.elapsed();
            if step > 0 {
                let phases = &mut out.phases;
                phases.forward += stats.forward;
                phases.head += stats.head;
                phases.backward += stats.backward;
                phases.optimizer += optimizer_time;
                phases.wall += step_time + optimizer_time;
                out.bytes += collective.bytes_moved() - moved;
            }
        }
        Ok(out)
    };
    if world == 1 {
        return run_rank(Arc::new(Local));
    }
    let ranks = thread_group(world, Duration::from_secs(600));
    let results: Vec<Result<Measured>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            ranks.into_iter().map(|r| scope.spawn(|| run_rank(Arc::new(r) as Arc<dyn Collective>))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| bail!("a rank panicked"))).collect()
    });
    results.into_iter().next().unwrap_or_else(|| bail!("no ranks"))
}
