//! A plan as a person reads it (a table per stage) and as a program does (JSON).

use serde_json::{json, Value};

use super::Plan;
use crate::human::bytes;

impl Plan {
    /// The stage's table: one line per item of a rank's memory at the peak, the total
    /// against the GPU's, and the predicted step time.
    pub fn table(&self) -> String {
        let shape = &self.shape;
        let share = shape.share();
        let mut out = format!(
            "stage {}: {} tokens per micro-batch, {} on each rank (context {}), {} micro-batch(es) per step, world {}\n",
            self.name,
            shape.docs.iter().sum::<usize>(),
            share.tokens,
            shape.context,
            shape.accumulation,
            shape.world
        );
        out += &format!("  predicted memory per rank, at its peak ({}):\n", self.memory.phase);
        for item in &self.memory.items {
            out += &format!("    {:<30} {:>10}  {}\n", item.name, bytes(item.bytes), item.detail);
        }
        let total = self.memory.total();
        match self.capacity {
            Some(capacity) if self.fits() => {
                out += &format!(
                    "    {:<30} {:>10}  of {} (fits, {:.0}%)\n",
                    "total",
                    bytes(total),
                    bytes(capacity),
                    100.0 * total as f64 / capacity as f64
                )
            }
            Some(capacity) => {
                let largest = self.memory.largest().map_or("", |i| i.name);
                out += &format!(
                    "    {:<30} {:>10}  of {} (DOES NOT FIT; largest: {largest}; {})\n",
                    "total",
                    bytes(total),
                    bytes(capacity),
                    self.advice.as_deref().unwrap_or("")
                )
            }
            None => out += &format!("    {:<30} {:>10}\n", "total", bytes(total)),
        }
        if let Some(t) = &self.time {
            out += &format!(
                "  predicted step: {:.3e} FLOPs ({:.3e} per GPU with the recompute) in {:.1} s of compute; \
                 FSDP moves {} all-gathered + {} reduce-scattered per rank at {:.0} GB/s; context exchange {} at {:.0} GB/s\n",
                t.model_flops,
                t.gpu_flops,
                t.compute_s,
                bytes(t.all_gather_bytes as u64),
                bytes(t.reduce_scatter_bytes as u64),
                t.fsdp_gbps,
                bytes(t.context_bytes as u64),
                t.context_gbps
            );
            out += &format!(
                "  predicted: {:.1} s per step, {:.0} tokens/s per GPU, MFU {:.1}%\n",
                t.step_s,
                t.tokens_per_gpu_s,
                100.0 * t.mfu
            );
        }
        out
    }

    /// The same as JSON, with `per_rank_peak_bytes`.
    pub fn json(&self) -> Value {
        let items: Vec<Value> = self
            .memory
            .items
            .iter()
            .map(|i| json!({ "name": i.name, "bytes": i.bytes, "detail": i.detail }))
            .collect();
        let phases: Vec<Value> =
            self.memory.phases.iter().map(|(p, b)| json!({ "phase": p, "bytes": b })).collect();
        let time = self.time.as_ref().map(|t| {
            json!({
                "model_flops": t.model_flops,
                "gpu_flops": t.gpu_flops,
                "compute_s": t.compute_s,
                "all_gather_bytes": t.all_gather_bytes,
                "reduce_scatter_bytes": t.reduce_scatter_bytes,
                "context_bytes": t.context_bytes,
                "fsdp_link_gbps": t.fsdp_gbps,
                "context_link_gbps": t.context_gbps,
                "step_s": t.step_s,
                "tokens_per_gpu_s": t.tokens_per_gpu_s,
                "mfu": t.mfu,
            })
        });
        let share = self.shape.share();
        json!({
            "stage": self.name,
            "predicted": true,
            "world": self.shape.world,
            "context": self.shape.context,
            "tokens_per_rank": share.tokens,
            "micro_batches": self.shape.accumulation,
            "peak_phase": self.memory.phase,
            "per_rank_peak_bytes": self.memory.total(),
            "items": items,
            "phases": phases,
            "gpu_memory_bytes": self.capacity,
            "fits": self.fits(),
            "advice": self.advice,
            "time": time,
        })
    }
}
