//! The model's fused ops and the CUDA kernels behind them.
//!
//! - [`ops`]: candle custom ops (RMSNorm, RoPE, SwiGLU) whose CPU bodies are the reference
//!   implementations and whose CUDA bodies launch the kernels of `kernels/`.
//! - [`adamw`]: the multi-tensor AdamW step over flat fp32 shards, with its CPU reference.
//! - [`matmul`]: f32 products over plain slices on the CPU, into a buffer or added to it.
//! - [`predicted`]: the static performance model's predictions, printed beside a GPU's
//!   measurements.
//! - [`launch`]: a kernel launch as data; each op describes its launches once, and the
//!   device and the emulation run the same descriptions.
//! - [`tensor_map`]: TMA tensor maps, checked as the driver checks them, for either executor
//!   to encode.
//! - `emulated` (feature `emulation`): the same kernel sources compiled as host C++ with
//!   the CUDA execution model emulated (`kernels/emu/host_cuda.h`), so that tests check
//!   each kernel, launched as the device would launch it, on machines without a GPU.
//! - `cuda` (feature `cuda`): the fatbins nvcc built for sm_80 and sm_90a, loaded through
//!   cudarc on candle's stream.

pub mod adamw;
pub mod attention;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{driver_fits, driver_version, fatbin_sources, load_kernel, TARGET_CUDA_VERSION};
#[cfg(feature = "emulation")]
pub mod emulated;
pub mod inputs;
pub mod launch;
pub mod matmul;
pub mod ops;
pub mod predicted;
pub mod simd;
pub mod tensor_map;
