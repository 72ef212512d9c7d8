//! `davinci doctor`: whether davinci works on this machine, and how fast, in one table.
//!
//! On a machine with NVIDIA GPUs (a `cuda` build): the driver and CUDA versions, the
//! compute capability, every kernel of the fatbins loaded, every kernel against the CPU
//! reference at a real model's shapes, three training steps of a small preset on the GPU
//! against the CPU, NCCL across the node's GPUs, and each kernel's measured speed beside
//! its predicted band. Without a GPU, the kernels run under the emulation at small shapes,
//! launched exactly as the device would launch them, and the table says so; the checks that
//! need a device are listed as skipped. The exit code is 1 when any check fails.

#[cfg(feature = "cuda")]
pub(crate) mod gpu;
mod kernels;

use std::fmt;

use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// `cuda:N` to check that GPU (a `cuda` build), `cpu` for the emulation; by default the
    /// first GPU when there is one, else the emulation.
    #[arg(long)]
    device: Option<String>,
    /// The model whose shapes the GPU checks use (a preset, a checkpoint or a Hub name).
    #[arg(long, default_value = "qwen2.5-32b")]
    model: String,
    /// Skip the NCCL check (it starts one process per GPU of the node).
    #[arg(long)]
    no_nccl: bool,
    /// Internal: run as one rank of the NCCL check that `doctor` launches.
    #[arg(long, hide = true)]
    nccl_rank: bool,
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
    /// A fact about the machine, not a pass or a fail (only a GPU gives these).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Info,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
            Status::Info => "info",
        })
    }
}

/// One row of the table.
pub struct Check {
    pub name: String,
    pub shape: String,
    pub status: Status,
    pub note: String,
}

impl Check {
    pub fn measured(name: &str, shape: String, ok: bool, note: String) -> Self {
        let status = if ok { Status::Pass } else { Status::Fail };
        Self { name: name.into(), shape, status, note }
    }

    pub fn failed(name: &str, note: String) -> Self {
        Self { name: name.into(), shape: String::new(), status: Status::Fail, note }
    }

    pub fn skipped(name: &str, why: &str) -> Self {
        Self { name: name.into(), shape: String::new(), status: Status::Skip, note: why.into() }
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub fn info(name: &str, text: String) -> Self {
        Self { name: name.into(), shape: String::new(), status: Status::Info, note: text }
    }
}

/// The checks that need a GPU, listed as skipped on a machine without one.
const DEVICE_ONLY: [&str; 5] = ["driver", "fatbins", "training steps", "nccl", "kernel speed"];

pub fn run(args: Args) -> Result<()> {
    if args.nccl_rank {
        return nccl_rank();
    }
    let checks = match device_ordinal(args.device.as_deref())? {
        Some(ordinal) => on_gpu(ordinal, &args)?,
        None => emulated(),
    };
    print_table(&checks);
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        bail!("{failed} of {} checks failed", checks.len())
    }
    Ok(())
}

/// Without a GPU: the kernels under the emulation.
fn emulated() -> Vec<Check> {
    let why = if cfg!(feature = "cuda") {
        "no CUDA device found"
    } else {
        "this davinci was built without the cuda feature"
    };
    println!("No GPU ({why}): the kernels run under the CPU emulation of CUDA, at small shapes,");
    println!("with the grids, blocks, shared memory and arguments the device would get.");
    let mut checks = kernels::run(&kernels::Target::Emulated, &kernels::Shapes::emulated());
    checks.extend(DEVICE_ONLY.iter().map(|name| Check::skipped(name, "needs a GPU")));
    checks
}

/// The GPU to check: `--device`, else the first one a `cuda` build finds.
fn device_ordinal(device: Option<&str>) -> Result<Option<usize>> {
    match device {
        Some("cpu") => Ok(None),
        Some("cuda") => Ok(Some(0)),
        Some(other) => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(ordinal) if cfg!(feature = "cuda") => Ok(Some(ordinal)),
            Some(_) => bail!("--device {other}: this davinci was built without the cuda feature"),
            None => bail!("unknown device `{other}` (expected cpu, cuda or cuda:N)"),
        },
        None => Ok(first_gpu()),
    }
}

#[cfg(feature = "cuda")]
fn first_gpu() -> Option<usize> {
    gpu::count().ok().filter(|&n| n > 0).map(|_| 0)
}

#[cfg(not(feature = "cuda"))]
fn first_gpu() -> Option<usize> {
    None
}

#[cfg(feature = "cuda")]
fn on_gpu(ordinal: usize, args: &Args) -> Result<Vec<Check>> {
    gpu::checks(ordinal, &args.model, !args.no_nccl)
}

#[cfg(not(feature = "cuda"))]
fn on_gpu(_: usize, _: &Args) -> Result<Vec<Check>> {
    bail!("this davinci was built without the cuda feature")
}

#[cfg(feature = "cuda")]
fn nccl_rank() -> Result<()> {
    gpu::nccl_rank()
}

#[cfg(not(feature = "cuda"))]
fn nccl_rank() -> Result<()> {
    bail!("the NCCL check needs a cuda build")
}

fn print_table(checks: &[Check]) {
    let width = |f: fn(&Check) -> usize, min: usize| checks.iter().map(f).max().unwrap_or(0).max(min);
    let (name, shape) = (width(|c| c.name.len(), 5), width(|c| c.shape.len(), 5));
    println!("{:<name$}  {:<shape$}  {:<6}  note", "check", "shape", "result");
    for c in checks {
        println!("{:<name$}  {:<shape$}  {:<6}  {}", c.name, c.shape, c.status.to_string(), c.note);
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    println!(
        "{} passed, {} failed, {} skipped",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip)
    );
}
