//! `davinci plan`: each rank's memory and a step's time, predicted before anything runs,
//! from the sizes the trainer itself uses: the FSDP units of [`crate::sharded::units`],
//! the context split of [`davinci_model::ContextSplit`], the loss's chunk, the CPU
//! attention's block budget. The CPU prediction is checked against `davinci bench step`'s
//! measured heap (the cli crate's `plan_cli` test); on a GPU the same arithmetic runs
//! with the compute dtype and flash attention's memory in place of the CPU's.

pub mod hardware;
mod memory;
mod report;
mod time;

pub use hardware::{Gpu, GPUS};
pub use memory::{Item, MemoryPlan};
pub use time::TimePlan;

use davinci_model::{Config, ContextSplit};

use crate::error::{Result, TrainError};
use crate::recipe::StageSpec;

/// Where the step runs: on the CPU, every tensor is f32 and attention is the tiled CPU
/// op; on a GPU, the weights are gathered and computed in the compute dtype and
/// attention is flash attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
}

/// The shape of one optimizer step on one rank.
#[derive(Debug, Clone)]
pub struct StepShape {
    pub config: Config,
    pub world: usize,
    /// Ranks sharing each row (context parallelism).
    pub context: usize,
    /// The document lengths of one micro-batch (its rows flattened into one).
    pub docs: Vec<usize>,
    /// Micro-batches per optimizer step on each data-parallel rank.
    pub accumulation: usize,
    /// Bytes of the compute dtype.
    pub dtype_bytes: usize,
    pub backend: Backend,
}

/// One rank's share of a micro-batch: its tokens, the key rows its queries read (its
/// chunks' documents from their starts), and the rows each rank gives the group's
/// all-gather of keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub tokens: usize,
    pub key_rows: usize,
    pub gather_rows: usize,
}

impl StepShape {
    /// Rank 0's share, as [`ContextSplit`] deals a row (the split is balanced, so every
    /// rank's is about the same).
    pub fn share(&self) -> Share {
        let segments = self.segments();
        Share {
            tokens: segments.iter().map(|s| s.0).sum(),
            key_rows: segments.iter().map(|s| s.1).sum(),
            gather_rows: if self.context > 1 { self.split().max_tokens() } else { 0 },
        }
    }

    /// Rank 0's attention segments, `(queries, keys)`: whole documents on one rank; under
    /// context parallelism its chunks, each seeing its document from the start.
    pub fn segments(&self) -> Vec<(usize, usize)> {
        if self.context <= 1 {
            return self.docs.iter().map(|&d| (d, d)).collect();
        }
        let split = self.split();
        split.pieces(0).iter().map(|p| (p.len as usize, (p.start + p.len) as usize)).collect()
    }

    fn split(&self) -> ContextSplit {
        let mut cu = vec![0u32];
        for &len in &self.docs {
            cu.push(cu[cu.len() - 1] + len as u32);
        }
        ContextSplit::new(&cu, self.context)
    }

    /// The shape of a recipe's stage on `world` ranks, each row one document of the
    /// stage's full length (the most attention work and the longest key gather).
    pub fn of_stage(
        config: &Config,
        stage: &StageSpec,
        world: usize,
        backend: Backend,
        dtype_bytes: usize,
    ) -> Self {
        let data_ranks = stage.data_ranks(world).max(1);
        let rows_per_rank = stage.global_rows().div_ceil(data_ranks);
        let micro = stage.micro_batch.max(1);
        Self {
            config: config.clone(),
            world,
            context: stage.context_parallel.max(1),
            docs: vec![stage.seq_len as usize; micro],
            accumulation: rows_per_rank.div_ceil(micro).max(1),
            dtype_bytes,
            backend,
        }
    }
}

/// A stage's plan: memory per rank and the step's time.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub shape: StepShape,
    pub memory: MemoryPlan,
    pub time: Option<TimePlan>,
    /// The GPU's memory, when planned for one.
    pub capacity: Option<u64>,
    /// When it does not fit: the smallest change that would, in words.
    pub advice: Option<String>,
}

impl Plan {
    pub fn fits(&self) -> bool {
        self.capacity.is_none_or(|c| self.memory.total() <= c)
    }
}

/// The cluster a recipe is planned for.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub gpu: Gpu,
    pub gpus: usize,
    pub gpus_per_node: usize,
}

/// Plans one stage of a recipe on `cluster` (in `dtype_bytes`, the recipe's compute dtype).
pub fn plan_stage(config: &Config, stage: &StageSpec, cluster: &Cluster, dtype_bytes: usize) -> Plan {
    let shape = StepShape::of_stage(config, stage, cluster.gpus, Backend::Cuda, dtype_bytes);
    let memory = memory::per_rank(&shape);
    let time = time::predict(&shape, cluster);
    let mut plan = Plan {
        name: stage.name.clone(),
        shape,
        memory,
        time: Some(time),
        capacity: Some(cluster.gpu.memory_bytes),
        advice: None,
    };
    if !plan.fits() {
        plan.advice = Some(advice(config, stage, cluster, dtype_bytes));
    }
    plan
}

/// The memory of one step of `shape` (no hardware: the CPU check).
pub fn plan_step(shape: StepShape) -> Plan {
    Plan {
        name: "step".into(),
        memory: memory::per_rank(&shape),
        shape,
        time: None,
        capacity: None,
        advice: None,
    }
}

/// The smallest change that fits: a larger context degree (that still divides the world
/// and the stage's rows), else a smaller micro-batch, else more GPUs (whole nodes).
fn advice(config: &Config, stage: &StageSpec, cluster: &Cluster, dtype_bytes: usize) -> String {
    let fits = |stage: &StageSpec, gpus: usize| {
        let shape = StepShape::of_stage(config, stage, gpus, Backend::Cuda, dtype_bytes);
        memory::per_rank(&shape).total() <= cluster.gpu.memory_bytes
    };
    let divides = |stage: &StageSpec, gpus: usize| {
        gpus.is_multiple_of(stage.context_parallel)
            && stage.global_rows().is_multiple_of(stage.data_ranks(gpus))
    };
    let mut candidate = stage.clone();
    for degree in (stage.context_parallel + 1)..=cluster.gpus {
        candidate.context_parallel = degree;
        if divides(&candidate, cluster.gpus) && fits(&candidate, cluster.gpus) {
            return format!("context_parallel = {degree} fits");
        }
    }
    let mut candidate = stage.clone();
    for micro in (1..stage.micro_batch).rev() {
        candidate.micro_batch = micro;
        if fits(&candidate, cluster.gpus) {
            return format!("micro_batch = {micro} fits");
        }
    }
    let node = cluster.gpus_per_node.max(1);
    for nodes in (cluster.gpus / node + 1)..=(cluster.gpus / node + 1) * 16 {
        if divides(stage, nodes * node) && fits(stage, nodes * node) {
            return format!("{} GPUs ({nodes} nodes) fit", nodes * node);
        }
    }
    "nothing within 16x the GPUs, a context degree up to the world or a micro-batch of 1 fits".into()
}

/// Stops a stage that will not fit (the trainer's check on a GPU), with the planner's
/// table; `force` lets it run anyway.
pub fn refuse_unless_fits(plans: &[Plan], force: bool) -> Result<()> {
    let over: Vec<&Plan> = plans.iter().filter(|p| !p.fits()).collect();
    if over.is_empty() || force {
        return Ok(());
    }
    let tables: Vec<String> = over.iter().map(|p| p.table()).collect();
    Err(TrainError::Invalid(format!(
        "predicted out of memory (pass --force to run anyway):\n{}",
        tables.join("\n")
    )))
}
