//! Training: recipe files, the layer-wise step with recompute, AdamW on fp32 master
//! weights, clipping, learning-rate schedules, checkpoints with exact resume, metrics, and
//! the runner that takes a recipe's stages in order.

pub mod checkpoint;
pub mod context;
pub mod error;
pub mod faults;
pub mod human;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod optimizer;
pub mod plan;
pub mod recipe;
pub mod schedule;
pub mod sharded;
pub mod tensorboard;
pub mod throughput;
pub mod trainer;

pub use error::{Result, TrainError};
pub use recipe::Recipe;
pub use trainer::{train, RunSummary, TrainOptions};
