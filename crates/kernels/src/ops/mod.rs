//! The model's fused ops as candle custom ops (and the loss's per-row cross-entropy). Each has a CPU body, which is the reference
//! implementation (plain loops over rows, f32 arithmetic with the same rounding points as
//! transformers), and, with the `cuda` feature, a CUDA body that launches the kernel of
//! `kernels/` with the same name. Each op's backward is itself a custom op, so gradients
//! flow through candle's autograd on either device.
//!
//! Inputs are made contiguous by the public functions; the bodies refuse strided layouts.

pub(crate) mod adamw_step;
pub(crate) mod cross_entropy;
pub(crate) mod flash_attention;
pub(crate) mod rms_norm;
pub(crate) mod rope;
pub(crate) mod squares;
pub(crate) mod swiglu;

pub use adamw_step::{adamw_step, CHUNK_LEN as ADAMW_CHUNK_LEN};
pub use cross_entropy::{cross_entropy_rows, cross_entropy_rows_in_place, RowLosses};
pub use flash_attention::flash_attention;
pub use rms_norm::{add_rms_norm, rms_norm, rms_norm_backward};
pub use rope::{rope, rope_backward};
pub use squares::sum_of_squares;
pub use swiglu::{swiglu, swiglu_backward};

use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, WithDType};
use half::{bf16, f16};

/// Floating-point element types the CPU bodies compute on, through f32.
pub(crate) trait CpuFloat: WithDType + Copy + Send + Sync {
    fn to_f32(self) -> f32;
    fn from_f32(value: f32) -> Self;
    /// Rounds an f32 to this type and back: the rounding a stored intermediate goes through.
    fn round(value: f32) -> f32 {
        Self::from_f32(value).to_f32()
    }
}

impl CpuFloat for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl CpuFloat for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
}

impl CpuFloat for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        f16::from_f32(value)
    }
}

/// The elements of a contiguous CPU input (for the CPU bodies of ops, here and in
/// `davinci-model`).
pub fn cpu_slice<'a, T: WithDType>(op: &str, storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: the input must be contiguous"),
    }
}

/// The elements of a contiguous tensor on the CPU, from its `storage_and_layout()`.
pub fn cpu_storage_slice<'a, T: WithDType>(
    op: &str,
    storage: &'a Storage,
    layout: &Layout,
) -> Result<&'a [T]> {
    match storage {
        Storage::Cpu(cpu) => cpu_slice(op, cpu, layout),
        _ => bail!("{op}: the input must be on the CPU"),
    }
}

/// Refuses inputs whose dtypes differ from the first's.
pub(crate) fn same_dtype(op: &str, dtypes: &[DType]) -> Result<DType> {
    let first = dtypes[0];
    if let Some(other) = dtypes.iter().find(|&&d| d != first) {
        bail!("{op}: inputs of different dtypes ({first:?} and {other:?})")
    }
    Ok(first)
}

/// Calls `$f::<T>($args)` for the element type `T` of `$dtype` (f32, bf16 or f16).
macro_rules! by_dtype {
    ($op:expr, $dtype:expr, $($f:ident)::+ ($($arg:expr),* $(,)?)) => {
        match $dtype {
            candle_core::DType::F32 => $($f)::+::<f32>($($arg),*),
            candle_core::DType::BF16 => $($f)::+::<half::bf16>($($arg),*),
            candle_core::DType::F16 => $($f)::+::<half::f16>($($arg),*),
            other => candle_core::bail!("{}: no implementation for {other:?}", $op),
        }
    };
}
pub(crate) use by_dtype;

/// Rows of at most this many elements are split over rayon's threads one row at a time;
/// the CPU bodies hand each thread at least this many elements.
pub(crate) const CPU_GRAIN: usize = 1 << 14;

/// How many rows of `cols` elements make one parallel task.
pub(crate) fn rows_per_task(cols: usize) -> usize {
    (CPU_GRAIN / cols.max(1)).max(1)
}
