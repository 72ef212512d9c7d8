//! Errors of the training crate.

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] davinci_model::ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Data(#[from] davinci_data::DataError),
    /// A collective failed (a rank lost, a timeout, an aborted NCCL communicator).
    #[error("collective: {0}")]
    Collective(#[from] davinci_dist::DistError),
    #[error("{}:{line}: {message}", path.display())]
    Recipe { path: std::path::PathBuf, line: usize, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;
