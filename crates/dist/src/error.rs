//! Errors of the distribution crate: they name the rank at fault where one is known.

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("rank {rank}: {message}")]
    Rank { rank: usize, message: String },
    #[error("timed out after {seconds} s waiting for rank(s) {ranks:?} at a collective ({what})")]
    Timeout { seconds: u64, ranks: Vec<usize>, what: String },
    #[error("collectives aborted: {0}")]
    Aborted(String),
    /// CUDA failed around a collective (an event or a stream wait cudarc could only record,
    /// a kernel's fault): its output cannot be trusted.
    #[error("CUDA error at {what}: {message}")]
    Cuda { what: String, message: String },
    #[error("the ranks disagree: {0}")]
    Mismatch(String),
    #[error("{0}")]
    Config(String),
    /// A collective this group cannot run (a broadcast within a sub-group of the world).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A frame from `rank` failed its authentication tag: someone on the network path
    /// changed, replayed or reordered bytes, or is not this job's rank.
    #[error("rank {rank}: {what}: the frame was altered or the connection was tampered with")]
    Integrity { rank: usize, what: String },
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, DistError>;

/// Attaches what was being done to an I/O error.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DistError {
    let what = what.into();
    move |source| DistError::Io { what, source }
}
