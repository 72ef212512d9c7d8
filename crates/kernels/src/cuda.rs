//! The kernels on a GPU: the fatbins nvcc built at compile time (cubins for sm_80 and
//! sm_90a, PTX for later chips), loaded once per device and source file, and launched on
//! candle's stream for that device so they order with candle's own work.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute_enum};
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, DeviceRepr,
    LaunchConfig, PushKernelArg, SyncOnDrop, ValidAsZeroBits,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId, WrapErr};
use candle_core::{bail, Layout, Result};

use crate::launch::{Buffer, Element, Executor, Launch};
use crate::tensor_map::{Swizzle, TensorMapSpec};

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

/// The device's [`Executor`]: launches queue on `stream` (candle's for the device), after
/// the work that wrote their inputs. The buffers' stream-ordering guards are held until
/// the executor is dropped, after its last launch, and so are its scratch buffers.
pub(crate) struct Device<'a> {
    device: &'a CudaDevice,
    stream: &'a Arc<CudaStream>,
    guards: Vec<SyncOnDrop<'a>>,
    scratch: Vec<CudaSlice<u8>>,
    tables: Vec<Arc<CudaSlice<u8>>>,
}

impl<'a> Device<'a> {
    pub(crate) fn new(device: &'a CudaDevice, stream: &'a Arc<CudaStream>) -> Self {
        Self { device, stream, guards: Vec::new(), scratch: Vec::new(), tables: Vec::new() }
    }

    /// A buffer the kernels read.
    pub(crate) fn read<T>(&mut self, view: &'a impl DevicePtr<T>) -> Buffer {
        let bytes = view.num_bytes();
        let (addr, guard) = view.device_ptr(self.stream);
        self.guards.push(guard);
        Buffer { addr, bytes }
    }

    /// A buffer the kernels write.
    pub(crate) fn write<T>(&mut self, view: &'a mut impl DevicePtrMut<T>) -> Buffer {
        let bytes = view.num_bytes();
        let (addr, guard) = view.device_ptr_mut(self.stream);
        self.guards.push(guard);
        Buffer { addr, bytes }
    }

    /// The address of an allocation only this executor's stream uses (stream order is
    /// all the ordering it needs).
    fn address(&self, slice: &CudaSlice<u8>) -> Buffer {
        let (addr, _same_stream) = slice.device_ptr(self.stream);
        Buffer { addr, bytes: slice.len() }
    }
}

/// Uploaded tables by device and content, the most recent last: attention's work lists
/// depend only on the row's documents, which every layer of a step shares, and AdamW's
/// chunk lists only on the shard's layout.
#[derive(Default)]
struct Tables {
    by_content: HashMap<(DeviceId, Vec<u8>), Arc<CudaSlice<u8>>>,
    order: VecDeque<(DeviceId, Vec<u8>)>,
}

/// Tables kept per process: enough for a few row layouts, a step's worth of shards.
const KEPT_TABLES: usize = 64;

fn tables() -> &'static Mutex<Tables> {
    static TABLES: OnceLock<Mutex<Tables>> = OnceLock::new();
    TABLES.get_or_init(Default::default)
}

impl Executor for Device<'_> {
    fn scratch(&mut self, bytes: usize) -> Result<Buffer> {
        // SAFETY: the kernels write a scratch buffer before they read it.
        let slice = unsafe { self.device.alloc::<u8>(bytes.max(1)) }?;
        let buffer = Buffer { bytes, ..self.address(&slice) };
        self.scratch.push(slice);
        Ok(buffer)
    }

    fn table(&mut self, bytes: &[u8]) -> Result<Buffer> {
        let key = (self.device.id(), bytes.to_vec());
        let mut tables = tables().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slice = match tables.by_content.get(&key).cloned() {
            Some(slice) => {
                // The most recently used last, so a table every step uses is never evicted.
                tables.order.retain(|k| k != &key);
                tables.order.push_back(key);
                slice
            }
            None => {
                let slice = Arc::new(self.device.clone_htod(&bytes.to_vec())?);
                if tables.order.len() >= KEPT_TABLES {
                    if let Some(oldest) = tables.order.pop_front() {
                        tables.by_content.remove(&oldest);
                    }
                }
                tables.order.push_back(key.clone());
                tables.by_content.insert(key, slice.clone());
                slice
            }
        };
        drop(tables);
        let buffer = Buffer { bytes: bytes.len(), ..self.address(&slice) };
        self.tables.push(slice);
        Ok(buffer)
    }

    fn run(&mut self, launch: &Launch) -> Result<()> {
        launch.check()?;
        // An error recorded by an earlier asynchronous call (an event, a free) surfaces
        // here, named, rather than later as somebody else's failure.
        self.stream.context().check_err().map_err(|e| {
            candle_core::Error::Msg(format!(
                "before launching {}: an earlier CUDA call failed: {e}",
                launch.kernel
            ))
        })?;
        let func = function(self.device, launch.source, &launch.kernel)?;
        if launch.opt_in_shared {
            // `check` knows sm_80's limit; consumer and workstation chips of the same
            // generation (sm_86, sm_89) allow less, and say so here.
            let limit = self
                .stream
                .context()
                .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
                .w()?;
            if launch.shared_bytes as i64 > limit as i64 {
                bail!(
                    "{launch}: this GPU allows {limit} bytes of shared memory a block; the kernel needs {} \
                     (the head_dim 128 attention backward needs an A100, H100 or H200)",
                    launch.shared_bytes
                )
            }
            func.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                launch.shared_bytes as i32,
            )
            .w()?;
        }
        let params = launch.packed_params();
        let mut builder = self.stream.launch_builder(&func);
        for words in &params {
            builder.arg(&words[0]);
        }
        let config = LaunchConfig {
            grid_dim: (launch.grid[0], launch.grid[1], launch.grid[2]),
            block_dim: (launch.block[0], launch.block[1], launch.block[2]),
            shared_mem_bytes: launch.shared_bytes,
        };
        // SAFETY: `check` found the geometry within the device's limits and every buffer
        // aligned and as large as the kernel's reach, which each op's launch description
        // computes from the same shape the kernel indexes.
        unsafe { builder.launch(config) }
            .map_err(|e| candle_core::Error::Msg(format!("launching {launch}: {e}")))?;
        Ok(())
    }

    fn tensor_map(&mut self, spec: &TensorMapSpec) -> Result<[u64; 16]> {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let data_type = match spec.element() {
            Element::Bf16 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            Element::F32 => sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
        };
        let swizzle = match spec.swizzle() {
            Swizzle::None => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_NONE,
            Swizzle::B32 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_32B,
            Swizzle::B64 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_64B,
            Swizzle::B128 => sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
        };
        let element_strides = vec![1u32; spec.rank()];
        let mut map = sys::CUtensorMap { opaque: [0; 16] };
        // SAFETY: the spec was checked against cuTensorMapEncodeTiled's documented limits
        // and its arrays have the rank's lengths; the driver writes only `map`.
        let status = unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut map,
                data_type,
                spec.rank() as u32,
                spec.buffer().addr as *mut std::ffi::c_void,
                spec.dims().as_ptr(),
                spec.strides().as_ptr(),
                spec.box_dims().as_ptr(),
                element_strides.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        if status != sys::CUresult::CUDA_SUCCESS {
            candle_core::bail!("cuTensorMapEncodeTiled refused a rank-{} map: {status:?}", spec.rank())
        }
        Ok(map.opaque)
    }
}

/// The kernel sources compiled into the fatbins.
pub fn fatbin_sources() -> Vec<&'static str> {
    FATBINS.iter().map(|(stem, _)| *stem).collect()
}

/// Loads kernel `name` of `kernels/{source}.cu` on `device` (the fatbin on first use).
pub fn load_kernel(device: &CudaDevice, source: &'static str, name: &str) -> Result<()> {
    function(device, source, name).map(|_| ())
}

/// The CUDA version this build targets (cudarc's bindings, the toolkit's PTX), as
/// `CUDARC_CUDA_VERSION` gave it at build time: the driver must support at least this.
pub const TARGET_CUDA_VERSION: &str = env!("DAVINCI_CUDA_TARGET_VERSION");

/// The CUDA version the driver supports, as the driver API gives it (13000 for 13.0).
pub fn driver_version() -> Result<i32> {
    let mut version = 0;
    // SAFETY: cuDriverGetVersion writes one int and needs no initialised context.
    let status = unsafe { candle_core::cuda_backend::cudarc::driver::sys::cuDriverGetVersion(&mut version) };
    if status != candle_core::cuda_backend::cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        bail!("cuDriverGetVersion: {status:?}")
    }
    Ok(version)
}

/// Whether the driver runs this build: a line naming the driver's CUDA version and the
/// build's, as the error when the driver is older.
pub fn driver_fits() -> std::result::Result<String, String> {
    let version = |v: i32| format!("{}.{}", v / 1000, (v % 1000) / 10);
    let target: i32 = TARGET_CUDA_VERSION.parse().unwrap_or(0);
    let found = driver_version().map_err(|e| e.to_string())?;
    if found < target {
        return Err(format!(
            "the NVIDIA driver supports CUDA {}, but this davinci was built for CUDA {}: update the driver \
             (CUDA 13.0 needs R580 or newer), or build davinci with a CUDA toolkit as old as the driver \
             (README, \"On a GPU machine\")",
            version(found),
            version(target)
        ));
    }
    Ok(format!("the driver supports CUDA {}; this build targets CUDA {}", version(found), version(target)))
}
