//! One rank's memory through a step, phase by phase, from what the code allocates.
//!
//! The step's peak is at one of three moments (the forward holds less than the backward
//! of its last layer, which keeps the same inputs and a whole tape besides):
//! - the head: every layer's saved input, and the loss's chunk of logits with its
//!   gradient and the head's weight gradient being summed;
//! - the backward of the last layer: every saved input, the layer recomputed on a tape,
//!   and the gradients flowing back through it;
//! - the backward of the first layer: one saved input, the same tape, and the gradient
//!   shards of every other unit (with one micro-batch; with more, every unit's shards
//!   exist from the start: the sum of the earlier micro-batches and the last one landing).

use davinci_model::ops::attention::tiled;
use davinci_model::ops::default_chunk_tokens;

use super::{Backend, StepShape};
use crate::sharded::units;

/// What the CUDA context, cuBLAS's and NCCL's workspaces take on each GPU before any
/// tensor: about 1 GiB on an H100 with CUDA 12 (our reading of `nvidia-smi` on an idle
/// process); an estimate, not derived from the code.
const CUDA_RUNTIME_BYTES: u64 = 1 << 30;

/// What each CPU thread holds while it takes part in a matrix product: `gemm` packs its
/// operands into a buffer the size of the L2 cache (1 MiB a core on the machines measured,
/// where the step's peak grew by about that much per rayon thread); an estimate.
const CPU_SCRATCH_PER_THREAD: u64 = 1 << 20;

/// One line of a rank's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub name: &'static str,
    pub bytes: u64,
    /// How it was counted, in words.
    pub detail: String,
}

/// A rank's memory at the step's peak: the items at that moment, and every phase's total.
#[derive(Debug, Clone)]
pub struct MemoryPlan {
    /// The phase the peak is in.
    pub phase: &'static str,
    pub items: Vec<Item>,
    pub phases: Vec<(&'static str, u64)>,
}

impl MemoryPlan {
    pub fn total(&self) -> u64 {
        self.items.iter().map(|i| i.bytes).sum()
    }

    /// The largest item.
    pub fn largest(&self) -> Option<&Item> {
        self.items.iter().max_by_key(|i| i.bytes)
    }
}

/// The sizes a phase is built from.
struct Sizes {
    b: u64,
    tokens: u64,
    hidden: u64,
    inter: u64,
    vocab: u64,
    layers: u64,
    q_width: u64,
    kv_width: u64,
    /// Per unit (embedding, layers, head): this rank's shard and the gathered whole, in elements.
    shard: Vec<u64>,
    full: Vec<u64>,
    /// Whether a gathered unit is a copy (not the fp32 master itself: f32 on one CPU rank).
    gather_copies: bool,
}

/// The plan of one step of `shape` on rank 0.
pub fn per_rank(shape: &StepShape) -> MemoryPlan {
    let config = &shape.config;
    let all = units(config, shape.world);
    let cpu = shape.backend == Backend::Cpu;
    let s = Sizes {
        b: if cpu { 4 } else { shape.dtype_bytes as u64 },
        tokens: shape.share().tokens as u64,
        hidden: config.hidden_size as u64,
        inter: config.intermediate_size as u64,
        vocab: config.vocab_size as u64,
        layers: config.num_hidden_layers as u64,
        q_width: (config.num_attention_heads * config.head_dim()) as u64,
        kv_width: (config.num_key_value_heads * config.head_dim()) as u64,
        shard: all.iter().map(|u| u.shard_len() as u64).collect(),
        full: all.iter().map(|u| (u.shard_len() * u.world) as u64).collect(),
        gather_copies: !(cpu && shape.world == 1),
    };
    let state: u64 = s.shard.iter().sum();
    let mut held = vec![
        Item {
            name: "fp32 master weights",
            bytes: 4 * state,
            detail: format!("{state} elements of the units' shards x 4 B"),
        },
        Item { name: "AdamW moments (fp32)", bytes: 8 * state, detail: "two per master weight".into() },
    ];
    if !cpu {
        held.push(Item {
            name: "CUDA runtime",
            bytes: CUDA_RUNTIME_BYTES,
            detail: "context, cuBLAS and NCCL workspaces (estimate)".into(),
        });
    } else if shape.world == 1 {
        // Counted for one rank only: ranks that are threads of one process share the pool,
        // and `bench step` counts each on its own thread.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        held.push(Item {
            name: "CPU threads' scratch",
            bytes: threads * CPU_SCRATCH_PER_THREAD,
            detail: format!("{threads} thread(s): the matrix products' packed operands (estimate)"),
        });
    }
    let phases = [head(&s, shape), backward(&s, shape, s.layers.saturating_sub(1)), backward(&s, shape, 0)];
    let base: u64 = held.iter().map(|i| i.bytes).sum();
    let totals: Vec<(&'static str, u64)> = phases
        .iter()
        .map(|(name, items)| (*name, base + items.iter().map(|i| i.bytes).sum::<u64>()))
        .collect();
    let (phase, items) = phases
        .into_iter()
        .max_by_key(|(_, items)| items.iter().map(|i| i.bytes).sum::<u64>())
        .unwrap_or(("none", Vec::new()));
    held.extend(items);
    MemoryPlan { phase, items: held, phases: totals }
}

/// The gradient shards live at a phase: every unit's, twice, under accumulation (the
/// earlier micro-batches' sum and the last one landing); with one micro-batch, those of
/// the units whose backward is done (`done`: unit indices).
fn grad_shards(s: &Sizes, shape: &StepShape, done: impl Iterator<Item = usize>) -> Item {
    let (elements, detail) = if shape.accumulation > 1 {
        (
            2 * s.shard.iter().sum::<u64>(),
            "every unit's: the earlier micro-batches' sum and the last landing".to_string(),
        )
    } else {
        let units: Vec<usize> = done.collect();
        (units.iter().map(|&u| s.shard[u]).sum(), format!("{} unit(s) whose backward is done", units.len()))
    };
    Item { name: "gradient shards (fp32)", bytes: 4 * elements, detail }
}

/// A gathered unit in the compute dtype (nothing on one CPU rank in f32: the masters
/// themselves serve).
fn gathered(s: &Sizes, unit: usize) -> u64 {
    if s.gather_copies {
        s.b * s.full[unit]
    } else {
        0
    }
}

fn saved_inputs(s: &Sizes, count: u64) -> Item {
    Item {
        name: "saved layer inputs",
        bytes: count * s.tokens * s.hidden * s.b,
        detail: format!("{count} layer(s) x {} tokens x {} x {} B", s.tokens, s.hidden, s.b),
    }
}

/// At the head: the saved inputs, the last hidden state (and the copy the norm's tape
/// starts from), the loss's working set over its last chunk.
fn head(s: &Sizes, shape: &StepShape) -> (&'static str, Vec<Item>) {
    let head_unit = s.full.len() - 1;
    let chunk = (default_chunk_tokens(s.vocab as usize) as u64).min(s.tokens);
    let (vh, th) = (s.vocab * s.hidden, s.tokens * s.hidden);
    let (in_loop, after) = if shape.backend == Backend::Cpu {
        // `head_cpu`'s buffers, made once: the chunk's rows and their gradient, its logits
        // (overwritten by their gradient) and losses, the hidden states' gradient and the
        // weight's, which become the returned tensors.
        let buffers = 4 * (2 * chunk * s.hidden + chunk * s.vocab + chunk + th + vh);
        (buffers, buffers)
    } else {
        // In the compute dtype (bf16 stays bf16, on tensor cores), with f32 sums. The last
        // chunk: its rows, logits and their gradient, the losses and log-sum-exps, every
        // chunk's hidden-state gradient so far, and the f32 weight gradient's sum being
        // replaced (the old sum, the chunk's product in f32, the new sum). After the loop:
        // the rows' gradients, their concatenation, it in f32, zeros and the index-add.
        let in_loop = s.b * (chunk * s.hidden + 2 * chunk * s.vocab + th) + 8 * chunk + 12 * vh;
        (in_loop, 2 * s.b * th + 4 * (3 * th + vh))
    };
    let items = vec![
        grad_shards(s, shape, std::iter::empty()),
        saved_inputs(s, s.layers),
        Item {
            name: "gathered units",
            bytes: gathered(s, head_unit) + if s.layers > 0 { gathered(s, s.layers as usize) } else { 0 },
            detail: "the head (norm + LM head) and the prefetched last layer".into(),
        },
        Item {
            name: "head: last hidden state",
            bytes: 2 * th * s.b,
            detail: "the output's copy on the norm's tape, the normed states".into(),
        },
        Item {
            name: "loss chunk",
            bytes: in_loop.max(after),
            detail: format!("{chunk} tokens x {} logits, with their gradient and the head's", s.vocab),
        },
    ];
    ("the loss head", items)
}

/// At the backward of `layer`: its saved input and those before it, the layer on a tape,
/// the gradients flowing through it.
fn backward(s: &Sizes, shape: &StepShape, layer: u64) -> (&'static str, Vec<Item>) {
    let name = if layer == 0 { "the backward of the first layer" } else { "the backward of the last layer" };
    let units = s.full.len();
    let done = (layer as usize + 2..units).chain(std::iter::once(units - 1)).filter(|&u| u != 0);
    let mut done: Vec<usize> = done.collect();
    done.dedup();
    let share = shape.share();
    let (t, b) = (s.tokens, s.b);
    let (keys, gather_rows, n) = (share.key_rows as u64, share.gather_rows as u64, shape.context as u64);
    // The tape, per token: the norm's output, q/k/v before and after the bias, after the
    // rotation, the attention's output, o_proj, the residual's sum and norm, gate, up,
    // their product, down, the layer's output, the product with the cotangent.
    let per_token = 7 * s.hidden + 4 * s.q_width + 5 * s.kv_width + 3 * s.inter;
    let mut tape = t * per_token * b + t * s.q_width / shape.config.head_dim().max(1) as u64 * 4;
    let mut exchange = 0;
    if n > 1 {
        // The local keys and values side by side and padded, the group's gathered buffer
        // (and its copy on the tape), the rows each query chunk reads, made contiguous.
        tape += b * 2 * s.kv_width * (t + gather_rows + 2 * keys);
        exchange = b * 2 * s.kv_width * 2 * n * gather_rows;
    }
    // The gradients in flight: through the MLP, or through attention (dQ, dK, dV and
    // their sums, the CPU's blocks of scores, the exchange's reduce-scatter in f32).
    // Through the MLP, counting candle's backward: down's input gradient (summed into a
    // fresh zero tensor), the SwiGLU backward's packed pair, gate's and up's sums (each
    // from zeros), the transposed operand of the weight-gradient matmul: eight
    // tokens x intermediate, and four of the hidden size around them, as measured on one
    // layer recomputed alone (intermediate 1024 and 2048 at 4096 tokens: 8.0 per token and
    // intermediate value).
    let mlp = (8 * t * s.inter + 4 * t * s.hidden) * b;
    let blocks = if shape.backend == Backend::Cpu { cpu_attention_blocks(shape) } else { 0 };
    let attention = 2 * b * (t * s.q_width + 2 * keys * s.kv_width) + blocks + exchange * 2;
    let layer_unit = layer as usize + 1;
    let items = vec![
        grad_shards(s, shape, done.into_iter()),
        saved_inputs(s, layer + 1),
        Item {
            name: "gathered units",
            bytes: b * s.full[layer_unit] + if layer > 0 { gathered(s, layer_unit - 1) } else { 0 },
            detail: "the layer's weights on the tape, and the prefetched next".into(),
        },
        Item {
            name: "layer recompute: tape",
            bytes: tape + 2 * t * s.hidden * b,
            detail: format!("{t} tokens x {per_token} values, with the input's and the cotangent's copies"),
        },
        Item {
            name: "layer recompute: gradients",
            bytes: mlp.max(attention) + b * s.full[layer_unit],
            detail: "in flight through the MLP or attention, and the layer's weight gradients".into(),
        },
        Item {
            name: "collective buffers",
            bytes: 4 * s.full[layer_unit] + exchange,
            detail: "the reduce-scatter's fp32 blocks, the context group's key/value gather".into(),
        },
    ];
    (name, items)
}

/// The CPU attention's backward besides its inputs and gradients: the per-row statistics
/// and the tiles' gradients before they are placed (`tiled::backward_scratch_bytes`).
fn cpu_attention_blocks(shape: &StepShape) -> u64 {
    let c = &shape.config;
    let dims = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
    let (tokens, keys) = shape.segments().into_iter().fold((0, 0), |(t, k), (q, kk)| (t + q, k + kk));
    tiled::backward_scratch_bytes(tokens, keys, dims) as u64
}
