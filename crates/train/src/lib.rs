//! Training: the layer-wise step with recompute, AdamW on fp32 master weights, clipping,
//! and learning-rate schedules. The recipe runner, checkpoints and metrics build on these.

pub mod checkpoint;
pub mod error;
pub mod optimizer;
pub mod schedule;
pub mod step;

pub use error::{Result, TrainError};
