//! `davinci plan`: each rank's memory and the step's time for a recipe on a cluster,
//! predicted before launching it; or, with `--model`, one step of `davinci bench step`'s
//! shape on the CPU, which the same command can then measure.

use std::path::PathBuf;

use anyhow::{Context, Result};
use davinci_model::{Config, PRESETS};
use davinci_train::plan::{hardware, plan_stage, plan_step, Backend, Cluster, Gpu, Plan, StepShape};
use davinci_train::trainer::resolve_model;
use davinci_train::Recipe;

use super::bench::{model_config, StepShapeArgs};
use crate::args::parse_dtype;

#[derive(clap::Args)]
pub struct Args {
    /// The recipe to plan (or `--model` for one step of `davinci bench step`'s shape).
    #[arg(required_unless_present = "model")]
    recipe: Option<PathBuf>,
    /// GPUs in the job.
    #[arg(long, required_unless_present = "model")]
    gpus: Option<usize>,
    #[arg(long, default_value_t = 8)]
    gpus_per_node: usize,
    /// A GPU of the table: h100, h200, a100-80 or a100-40 (the figures below override it).
    #[arg(long, default_value = "h100")]
    gpu: String,
    /// The GPU's memory, GiB.
    #[arg(long)]
    gpu_memory: Option<f64>,
    /// Dense bf16 peak, TFLOP/s.
    #[arg(long)]
    peak_tflops: Option<f64>,
    /// HBM bandwidth, GB/s.
    #[arg(long)]
    hbm_gbps: Option<f64>,
    /// Bandwidth of the link between GPUs, GB/s (NVLink and InfiniBand alike).
    #[arg(long)]
    link_gbps: Option<f64>,
    /// Print JSON (with `per_rank_peak_bytes` per stage).
    #[arg(long)]
    json: bool,
    /// A preset, a checkpoint directory or a Hub name: plan one `bench step` of it.
    #[arg(long, conflicts_with = "recipe")]
    model: Option<String>,
    /// With `--model`: the step's shape, as `bench step` takes it.
    #[command(flatten)]
    shape: StepShapeArgs,
}

pub fn run(args: Args) -> Result<()> {
    let plans = match &args.model {
        Some(model) => vec![bench_step(&args, model)?],
        None => recipe_plans(&args)?,
    };
    if args.json {
        let stages: Vec<_> = plans.iter().map(Plan::json).collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "stages": stages }))?);
    } else {
        plans.iter().for_each(|p| println!("{}", p.table()));
    }
    Ok(())
}

/// One step of `bench step`'s shape: one row of `--docs` equal documents.
fn bench_step(args: &Args, model: &str) -> Result<Plan> {
    let shape = &args.shape;
    shape.check()?;
    let config = model_config(model, shape.layers)?;
    let backend = match shape.device.as_str() {
        "cpu" => Backend::Cpu,
        _ => Backend::Cuda,
    };
    Ok(plan_step(StepShape {
        config,
        world: shape.world(),
        context: shape.context,
        docs: shape.doc_lengths(),
        accumulation: 1,
        dtype_bytes: parse_dtype(&shape.dtype)?.size_in_bytes(),
        backend,
    }))
}

/// Every stage of the recipe on the cluster the flags describe.
fn recipe_plans(args: &Args) -> Result<Vec<Plan>> {
    let path = args.recipe.as_ref().context("a recipe or --model")?;
    let gpus = args.gpus.context("--gpus")?;
    let recipe = Recipe::from_file(path)?;
    let spec = recipe.check_trainable(gpus)?;
    let config = recipe_config(&recipe)?;
    let cluster = Cluster { gpu: gpu(args)?, gpus, gpus_per_node: args.gpus_per_node };
    let dtype_bytes = spec.dtype.dtype().size_in_bytes();
    Ok(recipe.stages.iter().map(|stage| plan_stage(&config, stage, &cluster, dtype_bytes)).collect())
}

/// The recipe's model as `davinci train` resolves it; a Hub name that cannot be reached
/// falls back to the preset of the same name (`Qwen/Qwen2.5-32B` -> `qwen2.5-32b`).
fn recipe_config(recipe: &Recipe) -> Result<Config> {
    let spec = recipe.check_settings()?;
    match resolve_model(recipe, spec) {
        Ok((config, _)) => Ok(config),
        Err(err) => {
            let name = spec.init_from.as_deref().unwrap_or_default();
            let preset = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
            if !PRESETS.contains(&preset.as_str()) {
                return Err(err.into());
            }
            eprintln!("note: {name} could not be resolved ({err}); planning with the preset `{preset}`");
            Ok(Config::preset(&preset)?)
        }
    }
}

/// The GPU of `--gpu`, with any figure given on the command line in place of the table's.
fn gpu(args: &Args) -> Result<Gpu> {
    let keys: Vec<&str> = hardware::GPUS.iter().map(|g| g.key).collect();
    let mut gpu = hardware::gpu(&args.gpu)
        .with_context(|| format!("unknown --gpu `{}` (expected one of {})", args.gpu, keys.join(", ")))?
        .clone();
    if let Some(gib) = args.gpu_memory {
        gpu.memory_bytes = (gib * (1u64 << 30) as f64) as u64;
        gpu.name = "custom";
    }
    if let Some(peak) = args.peak_tflops {
        gpu.peak_tflops = peak;
    }
    if let Some(hbm) = args.hbm_gbps {
        gpu.hbm_gbps = hbm;
    }
    if let Some(link) = args.link_gbps {
        (gpu.nvlink_gbps, gpu.infiniband_gbps) = (link, link);
    }
    Ok(gpu)
}
