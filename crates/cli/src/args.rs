//! Turning command-line strings into the library's values: the one place the commands
//! parse a device, a dtype or a named setting.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use davinci_train::recipe::DTypeName;
use serde::de::DeserializeOwned;

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(ordinal) => ordinal,
            None => bail!("unknown device `{other}` (expected cpu, cuda or cuda:N)"),
        },
    };
    check_driver()?;
    Device::new_cuda(ordinal).with_context(|| format!("opening cuda:{ordinal}"))
}

/// Refuses a driver older than the CUDA version the build targets, naming both, before
/// anything fails deeper down for it (candle's PTX, a missing driver function).
#[cfg(feature = "cuda")]
fn check_driver() -> Result<()> {
    davinci_kernels::driver_fits().map(|_| ()).map_err(anyhow::Error::msg)
}

#[cfg(not(feature = "cuda"))]
fn check_driver() -> Result<()> {
    Ok(())
}

/// The GPU a rank uses under a launcher with `--device cuda`: its `LOCAL_RANK` among the
/// node's GPUs, unless `CUDA_VISIBLE_DEVICES` (`visible`) shows it a single one, as SLURM's
/// per-task binding (`--gpus-per-task=1`, `--gpu-bind=single:1`) does: then that one, 0.
pub fn local_cuda_ordinal(local_rank: usize, visible: Option<&str>) -> usize {
    let listed = visible.map(|v| v.split(',').filter(|d| !d.trim().is_empty()).count());
    if listed == Some(1) {
        0
    } else {
        local_rank
    }
}

/// `f32`, `bf16` or `f16` (also transformers' `float32`, `bfloat16`, `float16`), as a
/// recipe spells them.
pub fn parse_dtype(name: &str) -> Result<DType> {
    Ok(parse_named::<DTypeName>("dtype (expected f32, bf16 or f16)", name)?.dtype())
}

/// A setting by the name a recipe file gives it (a template, a tool style, a loss scope):
/// the same spelling on the command line as in TOML.
pub fn parse_named<T: DeserializeOwned>(what: &str, value: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.into()))
        .with_context(|| format!("unknown {what} `{value}`"))
}

#[cfg(test)]
mod tests {
    use super::local_cuda_ordinal;

    #[test]
    fn a_rank_that_sees_one_gpu_uses_it_whatever_its_local_rank() {
        assert_eq!(local_cuda_ordinal(3, Some("3")), 0, "SLURM bound task 3 to its GPU");
        assert_eq!(local_cuda_ordinal(3, Some("0,1,2,3")), 3);
        assert_eq!(local_cuda_ordinal(3, None), 3);
        assert_eq!(local_cuda_ordinal(2, Some("GPU-8f1c2a4e")), 0, "a UUID names one GPU too");
    }
}
