//! Turning command-line strings into the library's values: the one place the commands
//! parse a device, a dtype or a named setting.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use davinci_train::recipe::DTypeName;
use serde::de::DeserializeOwned;

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
