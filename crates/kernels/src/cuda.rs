//! The kernels on a GPU: the fatbins nvcc built at compile time (cubins for sm_80 and
//! sm_90a, PTX for later chips), loaded once per device and source file, and launched on
//! candle's stream for that device so they order with candle's own work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaView, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId, WrapErr};
use candle_core::{bail, Layout, Result};

include!(concat!(env!("OUT_DIR"), "/fatbins.rs"));

/// Loaded modules by (device, source) and looked-up kernels by (device, kernel name), so a
/// launch after the first costs one map lookup.
#[derive(Default)]
struct Loaded {
    modules: HashMap<(DeviceId, &'static str), Arc<CudaModule>>,
    functions: HashMap<(DeviceId, String), CudaFunction>,
}

fn loaded() -> &'static Mutex<Loaded> {
    static LOADED: OnceLock<Mutex<Loaded>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// Kernel `name` of `kernels/{source}.cu` on `device`, loading the source's fatbin on
/// first use.
pub(crate) fn function(device: &CudaDevice, source: &'static str, name: &str) -> Result<CudaFunction> {
    let mut loaded = loaded().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(function) = loaded.functions.get(&(device.id(), name.to_string())) {
        return Ok(function.clone());
    }
    let module = match loaded.modules.get(&(device.id(), source)) {
        Some(module) => module.clone(),
        None => {
            let Some((_, image)) = FATBINS.iter().find(|(stem, _)| *stem == source) else {
                bail!("no kernel source {source}.cu was compiled in")
            };
            let module = device.cuda_stream().context().load_module(Ptx::from_binary(image.to_vec())).w()?;
            loaded.modules.insert((device.id(), source), module.clone());
            module
        }
    };
    let function = module.load_function(name).w()?;
    loaded.functions.insert((device.id(), name.to_string()), function.clone());
    Ok(function)
}

/// A one-dimensional launch.
pub(crate) fn config(blocks: u32, threads: u32, shared_bytes: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: shared_bytes }
}

/// The elements of a contiguous CUDA input.
pub(crate) fn view<'a, T: CudaDType + DeviceRepr>(
    op: &str,
    storage: &'a CudaStorage,
    layout: &Layout,
) -> Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(storage.as_cuda_slice::<T>()?.slice(start..end)),
        None => bail!("{op}: the input must be contiguous"),
    }
}

/// A new device buffer of `len` elements that the kernel will fill completely. (At least
/// one element: the driver refuses empty allocations; an empty tensor never reads it.)
pub(crate) fn output<T: DeviceRepr>(device: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every caller launches a kernel that writes all `len` elements before the
    // buffer is read.
    unsafe { device.alloc::<T>(len.max(1)) }
}

/// A new zeroed device buffer of `len` elements (at least one, as for [`output`]).
pub(crate) fn zeros<T: DeviceRepr + ValidAsZeroBits>(
    device: &CudaDevice,
    len: usize,
) -> Result<CudaSlice<T>> {
    device.alloc_zeros::<T>(len.max(1))
}

/// The kernel-name suffix of an element type: the kernels come in `_f32` and `_bf16`.
pub(crate) fn suffix(op: &str, dtype: candle_core::DType) -> Result<&'static str> {
    match dtype {
        candle_core::DType::F32 => Ok("f32"),
        candle_core::DType::BF16 => Ok("bf16"),
        other => bail!("{op}: the CUDA kernels take f32 or bf16, not {other:?}"),
    }
}

/// Calls `$f::<T>($args)` for the CUDA element type of `$dtype` (f32 or bf16).
macro_rules! by_cuda_dtype {
    ($op:expr, $dtype:expr, $($f:ident)::+ ($($arg:expr),* $(,)?)) => {
        match $dtype {
            candle_core::DType::F32 => $($f)::+::<f32>($($arg),*),
            candle_core::DType::BF16 => $($f)::+::<half::bf16>($($arg),*),
            other => candle_core::bail!("{}: the CUDA kernels take f32 or bf16, not {other:?}", $op),
        }
    };
}
pub(crate) use by_cuda_dtype;
