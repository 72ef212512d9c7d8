//! The model's operations, one module an op.
//!
//! Each op is a plain function over candle tensors with gradients. RMSNorm, RoPE and
//! SwiGLU are the fused custom ops of `davinci-kernels` (a CPU reference body, and a CUDA
//! body that launches the kernel); attention and the loss are written here, from candle
//! primitives or with an explicit backward. The model is compared with transformers
//! through these ops on either device.

pub mod attention;
mod cross_entropy;
mod embedding;
mod head_chunks;
mod head_cpu;
mod rope;
mod softmax;

pub use attention::{attention, varlen_causal_attention, Segments};
pub use cross_entropy::{
    default_chunk_tokens, linear_cross_entropy, mean_cross_entropy_loss, CrossEntropyOutput, IGNORE_INDEX,
};
/// RMSNorm as transformers' `Qwen2RMSNorm` computes it (alone, or fused with the residual
/// add before it), and Qwen2.5's gated activation `silu(gate) * up`: the fused ops of
/// `davinci-kernels`.
pub use davinci_kernels::ops::{add_rms_norm, rms_norm, swiglu};
pub use embedding::embedding_backward;
pub use rope::Rotary;
pub use softmax::softmax_last_dim;
