//! Who this process is in the job, from the variables torchrun and SLURM set, and the
//! connection to the others.

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;

use crate::collective::{Collective, Local};
use crate::error::{DistError, Result};
use crate::tcp::TcpRank;

/// This process's place in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    /// `MASTER_ADDR:MASTER_PORT`, where rank 0 listens.
    pub master: String,
}

impl LaunchEnv {
    /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (torchrun, `davinci launch`) or else
    /// `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`, plus `MASTER_ADDR` and
    /// `MASTER_PORT` (default 29500). Under SLURM, so that a bare `srun davinci train`
    /// works, they default to the first host of the step's node list and a port drawn from
    /// the job id (two jobs sharing a node then rarely collide). `None` when nothing names
    /// a world: a single process.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let pick = |torchrun: &str, slurm: &str| var(torchrun).or_else(|| var(slurm));
        let Some(world) = pick("WORLD_SIZE", "SLURM_NTASKS") else { return Ok(None) };
        let number = |name: &str, value: Option<String>, default: Option<usize>| -> Result<usize> {
            match value {
                Some(v) => {
                    v.trim().parse().map_err(|_| DistError::Config(format!("{name}={v} is not a number")))
                }
                None => default.ok_or_else(|| DistError::Config(format!("{name} is not set"))),
            }
        };
        let world = number("WORLD_SIZE", Some(world), None)?;
        let rank = number("RANK", pick("RANK", "SLURM_PROCID"), None)?;
        let local_rank = number("LOCAL_RANK", pick("LOCAL_RANK", "SLURM_LOCALID"), Some(0))?;
        if world == 0 || rank >= world {
            return Err(DistError::Config(format!("RANK={rank} is not below WORLD_SIZE={world}")));
        }
        // SLURM's defaults are read only where the script set nothing.
        let addr = match var("MASTER_ADDR") {
            Some(addr) => addr,
            None => match ["SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"]
                .into_iter()
                .find_map(|name| var(name).map(|list| (name, list)))
            {
                Some((name, list)) => first_host(&list)
                    .ok_or_else(|| DistError::Config(format!("{name}={list} names no host")))?,
                None if world > 1 => {
                    return Err(DistError::Config(
                        "MASTER_ADDR is not set: give the address of rank 0's host".into(),
                    ))
                }
                None => "127.0.0.1".into(),
            },
        };
        let port = match (var("MASTER_PORT"), var("SLURM_JOB_ID")) {
            (Some(port), _) => number("MASTER_PORT", Some(port), None)?,
            (None, Some(job)) => 20_000 + number("SLURM_JOB_ID", Some(job), None)? % 20_000,
            (None, None) => 29500,
        };
        Ok(Some(Self { rank, world, local_rank, master: format!("{addr}:{port}") }))
    }
}

/// The first host a SLURM node list names: `gpu[007-012,020],login1` gives `gpu007`
/// (zero padding kept), `rack[1-2]-n[5-6]` gives `rack1-n5`. `None` for an empty or
/// malformed list.
pub fn first_host(list: &str) -> Option<String> {
    let mut host = String::new();
    let mut chars = list.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                // The first number of the bracket's first range.
                let (mut inner, mut closed) = (String::new(), false);
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                let digits: String = inner.chars().take_while(char::is_ascii_digit).collect();
                if digits.is_empty() || !closed {
                    return None;
                }
                host.push_str(&digits);
            }
            ']' => return None,
            c => host.push(c),
        }
    }
    (!host.is_empty()).then_some(host)
}

/// The group this process belongs to, for training on `device`: [`Local`] when started
/// alone; else, at `MASTER_ADDR:MASTER_PORT`, the TCP backend on the CPU, or on a GPU
/// (with the `nccl` feature) NCCL, whose unique id travels through the TCP rendezvous.
/// Every rank must pass the same `fingerprint`.
pub fn connect_from_env(
    fingerprint: &str,
    timeout: Duration,
    device: &Device,
) -> Result<Arc<dyn Collective>> {
    let env = match LaunchEnv::from_vars(|name| std::env::var(name).ok())? {
        Some(env) if env.world > 1 => env,
        _ => return Ok(Arc::new(Local)),
    };
    let supported = matches!(device, Device::Cpu) || (cfg!(feature = "nccl") && device.is_cuda());
    if !supported {
        return Err(DistError::Config(format!(
            "no collectives for {device:?} in this build (GPUs need davinci built with --features cuda)"
        )));
    }
    tracing::info!("rank {} of {}: joining the group at {}", env.rank, env.world, env.master);
    let control = TcpRank::connect(&env.master, env.rank, env.world, fingerprint, timeout)?;
    match device {
        #[cfg(feature = "nccl")]
        Device::Cuda(cuda) => Ok(Arc::new(crate::nccl::NcclRank::over(control, cuda)?)),
        _ => Ok(Arc::new(control)),
    }
}
