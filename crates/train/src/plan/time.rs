//! A step's predicted time on a cluster: its FLOPs at the GPU's peak (times the share of
//! it dense matmuls reach), and the bytes its collectives move over the link they cross.

use super::{Cluster, StepShape};
use crate::sharded::units;
use crate::throughput::step_flops;

/// The share of the data-sheet peak the step's matmuls are assumed to reach: a typical
/// cuBLAS bf16 GEMM at these shapes on H100 and A100 (an assumption, not a measurement).
pub const MATMUL_EFFICIENCY: f64 = 0.7;

/// Everything predicted about one optimizer step (per GPU unless said otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct TimePlan {
    /// Model FLOPs of the whole step (all ranks), as MFU counts them.
    pub model_flops: f64,
    /// FLOPs one GPU runs, with the layer-wise recompute's second forward.
    pub gpu_flops: f64,
    pub compute_s: f64,
    /// Bytes each rank receives in FSDP's all-gathers and sends in its reduce-scatters.
    pub all_gather_bytes: f64,
    pub reduce_scatter_bytes: f64,
    /// Bytes of the context group's key/value exchange.
    pub context_bytes: f64,
    /// GB/s of the links FSDP and the context group cross.
    pub fsdp_gbps: f64,
    pub context_gbps: f64,
    pub step_s: f64,
    pub tokens_per_gpu_s: f64,
    pub mfu: f64,
}

/// The step of `shape` on `cluster`: FSDP's traffic overlaps the compute (the next unit
/// is gathered while this one runs); the context exchange is on attention's path and
/// adds to it.
pub fn predict(shape: &StepShape, cluster: &Cluster) -> TimePlan {
    let config = &shape.config;
    let world = shape.world.max(1) as f64;
    let n = shape.context.max(1);
    let data_ranks = (shape.world / n).max(1) as f64;
    let micro = shape.accumulation as f64;
    let model_flops = step_flops(config, shape.docs.iter().copied()) * micro * data_ranks;
    let gpu_flops = model_flops * 4.0 / 3.0 / world;
    let gpu = &cluster.gpu;
    let compute_s = gpu_flops / (gpu.peak_tflops * 1e12 * MATMUL_EFFICIENCY);

    let full: Vec<f64> =
        units(config, shape.world).iter().map(|u| (u.shard_len() * u.world) as f64).collect();
    let layers: f64 = full[1..full.len() - 1].iter().sum();
    let others = world.recip().mul_add(-1.0, 1.0);
    let b = shape.dtype_bytes as f64;
    // The forward gathers every unit, the backward every layer again.
    let all_gather_bytes = others * (full.iter().sum::<f64>() + layers) * b * micro;
    let reduce_scatter_bytes = others * full.iter().sum::<f64>() * 4.0 * micro;
    let share = shape.share();
    let kv = 2.0 * (config.num_key_value_heads * config.head_dim()) as f64;
    let rows = share.gather_rows as f64;
    let per_layer =
        if n > 1 { 2.0 * (n - 1) as f64 * rows * kv * b + (n - 1) as f64 * rows * kv * 4.0 } else { 0.0 };
    let context_bytes = per_layer * config.num_hidden_layers as f64 * micro;

    let node = cluster.gpus_per_node.max(1);
    let link = |span: usize| if span <= node { gpu.nvlink_gbps } else { gpu.infiniband_gbps };
    let (fsdp_gbps, context_gbps) = (link(shape.world), link(n));
    let fsdp_s = (all_gather_bytes + reduce_scatter_bytes) / (fsdp_gbps * 1e9);
    let context_s = context_bytes / (context_gbps * 1e9);
    let step_s = compute_s.max(fsdp_s) + context_s;
    let tokens = shape.docs.iter().sum::<usize>() as f64 * micro * data_ranks;
    TimePlan {
        model_flops,
        gpu_flops,
        compute_s,
        all_gather_bytes,
        reduce_scatter_bytes,
        context_bytes,
        fsdp_gbps,
        context_gbps,
        step_s,
        tokens_per_gpu_s: tokens / step_s / world,
        mfu: model_flops / world / step_s / (gpu.peak_tflops * 1e12),
    }
}
