//! Errors of the model crate: each names the file, tensor or value it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid config: {message}")]
    Config { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("unknown model preset `{name}` (known: {known})")]
    UnknownPreset { name: String, known: String },
    #[error("{path}: not a valid safetensors file (truncated or corrupt?): {message}")]
    CorruptFile { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Checksum { path: PathBuf, message: String },
    #[error("{path}: invalid index: {message}")]
    Index { path: PathBuf, message: String },
    #[error("tensor `{name}` is missing from {path}")]
    MissingTensor { name: String, path: PathBuf },
    #[error("tensor `{name}` in {path} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch { name: String, path: PathBuf, expected: Vec<usize>, actual: Vec<usize> },
    #[error("tensor `{name}` in {path}: {message}")]
    BadTensor { name: String, path: PathBuf, message: String },
    #[error("no model at `{0}`: not a directory with config.json, and not a Hub model in the local cache")]
    ModelNotFound(String),
    #[error("Hub download of `{name}` failed: {message}")]
    Hub { name: String, message: String },
    #[error("invalid packed input: {0}")]
    Packing(String),
    /// A context group's exchange of keys and values failed (a collective).
    #[error("context exchange: {0}")]
    Exchange(String),
    #[error("invalid labels: {0}")]
    Labels(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// Attaches a path to an I/O error.
pub fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.into();
    move |source| ModelError::Io { path, source }
}
