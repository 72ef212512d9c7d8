//! The model's operations, one module an op.
//!
//! Each op is a plain function over candle tensors whose body is the CPU reference: it is
//! written from differentiable candle primitives (or, for the loss, a custom op with an
//! explicit backward), so gradients flow through it, and its backward is tested against
//! finite differences or against transformers. The CUDA kernels replace these bodies
//! behind the same signatures; the model never changes when they do.

pub mod attention;
mod cross_entropy;
mod rms_norm;
mod rope;
mod softmax;
mod swiglu;

pub use attention::varlen_causal_attention;
pub use cross_entropy::{
    default_chunk_tokens, linear_cross_entropy, mean_cross_entropy_loss, CrossEntropyOutput, IGNORE_INDEX,
};
pub use rms_norm::rms_norm;
pub use rope::Rotary;
pub use softmax::softmax_last_dim;
pub use swiglu::swiglu;
