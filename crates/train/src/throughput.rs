//! How much of the hardware a step used: model FLOPs, the device's peak, and the memory a
//! step held, for the metrics and the progress line.

use candle_core::{DType, Device};
use davinci_model::Config;

/// Model FLOPs of a training step over packed documents of these lengths: forward and
/// backward (3 x the forward), not the layer-wise recompute, as MFU counts them.
///
/// - Matrix multiplications with the weights: 2 FLOPs per weight and token forward, so
///   `6 x weights x tokens`. The embedding is a lookup, not a product, and is left out,
///   except when it is tied to the LM head, which multiplies by it.
/// - Attention within each causal document of length `n`: `q k^T` and `p v` each take
///   `n^2 / 2 x head_dim x 2` FLOPs per head forward, so `6 x layers x heads x head_dim x
///   n^2` for the step.
pub fn step_flops(config: &Config, doc_lengths: impl IntoIterator<Item = usize>) -> f64 {
    let embedding = (config.vocab_size * config.hidden_size) as f64;
    let weights = config.num_parameters() as f64 - if config.tie_word_embeddings { 0.0 } else { embedding };
    let attention_width = (config.num_attention_heads * config.head_dim()) as f64;
    let (mut tokens, mut squares) = (0f64, 0f64);
    for n in doc_lengths {
        tokens += n as f64;
        squares += (n as f64).powi(2);
    }
    6.0 * weights * tokens + 6.0 * config.num_hidden_layers as f64 * attention_width * squares
}

/// The dense tensor-core peak of the device for `dtype`, in TFLOP/s, from the vendors'
/// data sheets; `Err` says why there is none (the CPU, an unknown GPU, f32 weights).
pub fn peak_tflops(device: &Device, dtype: DType) -> std::result::Result<f64, String> {
    if !matches!(dtype, DType::BF16 | DType::F16) {
        return Err(format!("MFU is computed for bf16 and f16 training; this run is {dtype:?}"));
    }
    match device {
        Device::Cpu => Err("MFU needs a device peak, and the CPU's is not in the table".into()),
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => {
            let context = cuda.cuda_stream().context().clone();
            let capability = context.compute_capability().map_err(|e| format!("{e:?}"))?;
            let name = context.name().unwrap_or_default();
            gpu_peak(capability, &name)
                .ok_or_else(|| format!("no peak known for {name} (sm_{}{})", capability.0, capability.1))
        }
        #[allow(unreachable_patterns)]
        _ => Err("MFU needs a device peak, and this device's is not in the table".into()),
    }
}

/// The table's entry for a CUDA device, with the memory the driver reports in place of
/// the table's (`None` on the CPU or for a GPU not in the table).
pub fn device_gpu(device: &Device) -> Option<crate::plan::Gpu> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        let context = cuda.cuda_stream().context().clone();
        let capability = context.compute_capability().ok()?;
        let name = context.name().unwrap_or_default();
        let mut gpu = crate::plan::hardware::detect(capability, &name)?;
        if let Ok((_, total)) = context.mem_get_info() {
            gpu.memory_bytes = total as u64;
        }
        return Some(gpu);
    }
    let _ = device;
    None
}

/// Dense bf16/f16 tensor-core TFLOP/s by compute capability and name, from the one
/// hardware table ([`crate::plan::hardware`]).
pub fn gpu_peak(capability: (i32, i32), name: &str) -> Option<f64> {
    crate::plan::hardware::detect(capability, name).map(|gpu| gpu.peak_tflops)
}

/// The memory a step held, in bytes: on the CPU the heap's peak since
/// [`reset_peak_memory`] (none unless the binary counts its allocations, as `davinci`
/// does); on a GPU the memory in use at the step's end, as the driver reports it (it keeps
/// no peak).
pub fn step_memory(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => Some(crate::memory::peak_bytes() as u64).filter(|&b| b > 0),
        #[cfg(feature = "cuda")]
        Device::Cuda(cuda) => {
            let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
            Some((total - free) as u64)
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Starts a step's memory measurement.
pub fn reset_peak_memory() {
    crate::memory::reset_peak();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flops_of_a_step_are_six_per_weight_and_token_plus_attention() {
        let config = Config::preset("qwen2.5-7b").unwrap();
        let embedding = (config.vocab_size * config.hidden_size) as f64;
        let weights = config.num_parameters() as f64 - embedding;
        // One document of 4096 tokens against two of 2048: the same weight FLOPs, and the
        // attention part halves.
        let one = step_flops(&config, [4096]);
        let two = step_flops(&config, [2048, 2048]);
        let attention_one = 6.0 * 28.0 * 3584.0 * 4096f64.powi(2);
        assert!((one - (6.0 * weights * 4096.0 + attention_one)).abs() < 1e-6 * one);
        assert!((one - two - attention_one / 2.0).abs() < 1e-6 * one);
        // The tied 0.5B model multiplies by its embedding in the head: it counts.
        let tied = Config::preset("qwen2.5-0.5b").unwrap();
        let per_token = step_flops(&tied, [1]) - 6.0 * 24.0 * 896.0;
        assert!((per_token - 6.0 * tied.num_parameters() as f64).abs() < 1.0);
    }

    #[test]
    fn mfu_has_no_peak_on_the_cpu_or_for_f32() {
        assert!(peak_tflops(&Device::Cpu, DType::BF16).unwrap_err().contains("CPU"));
        assert!(peak_tflops(&Device::Cpu, DType::F32).unwrap_err().contains("F32"));
        assert_eq!(gpu_peak((9, 0), "NVIDIA H100 80GB HBM3"), Some(989.0));
        assert_eq!(gpu_peak((9, 0), "NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(gpu_peak((7, 5), "Tesla T4"), None);
    }
}
