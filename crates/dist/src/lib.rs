//! Distribution: collectives behind one trait ([`Collective`]) with an in-process backend
//! (ranks as threads), a TCP backend (ranks as processes, on one host or several) and,
//! with the `nccl` feature, NCCL for GPUs (one process per GPU),
//! and rendezvous from torchrun's and SLURM's variables. How FSDP lays parameters out over
//! the ranks is the trainer's business (`davinci_train::sharded`).
//!
//! Sub-groups of consecutive ranks (context parallelism's) run collectives among
//! themselves ([`subgroup`]) while the world's keep running.
//!
//! Every backend sums in rank order, so a result does not depend on which rank computes
//! it or on the backend: threads and processes give bit-identical runs.

pub mod collective;
pub mod error;
pub mod group;
pub mod inflight;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod rendezvous;
pub mod tcp;
pub mod threads;
pub mod watchdog;
mod wire;

pub use collective::{Collective, Local, Membership};
pub use error::{DistError, Result};
pub use group::subgroup;
pub use rendezvous::{connect_from_env, JobSecret, LaunchEnv};
