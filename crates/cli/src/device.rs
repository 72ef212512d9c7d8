//! Choosing the device and dtype from command-line flags.

use anyhow::{bail, Result};
use candle_core::{DType, Device};

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(ordinal) => Ok(Device::new_cuda(ordinal)?),
            None => bail!("unknown device `{other}` (expected cpu, cuda or cuda:N)"),
        },
    }
}

/// `f32`, `bf16` or `f16` (also transformers' `float32`, `bfloat16`, `float16`).
pub fn parse_dtype(name: &str) -> Result<DType> {
    Ok(match name {
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" => DType::F16,
        other => bail!("unknown dtype `{other}` (expected f32, bf16 or f16)"),
    })
}
