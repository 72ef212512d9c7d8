//! The kernels under the emulation of the CUDA execution model (`kernels/emu`): the same
//! sources compiled as host C++, each CUDA thread a host thread. [`Host`] is the
//! emulation's [`Executor`]: it runs the launches the ops describe, with the geometry and
//! arguments the device would get, on host memory. Each op's `emulated` module has the
//! safe entry points over host slices; they are re-exported here for the tests and for
//! `davinci doctor` on a machine without a GPU.

use std::ffi::{c_char, c_void, CStr};

use crate::launch::{self, Buffer, Executor, Launch};
use crate::tensor_map::TensorMapSpec;

/// bfloat16 bits, as the device stores them.
pub type Bf16 = u16;

/// Host element types the kernels take: f32, or bf16 bits.
pub trait Element: Copy + Send + Sync {
    const ELEMENT: launch::Element;
}
impl Element for f32 {
    const ELEMENT: launch::Element = launch::Element::F32;
}
impl Element for Bf16 {
    const ELEMENT: launch::Element = launch::Element::Bf16;
}

/// Refuses a buffer of another length than the shape needs.
pub(crate) fn check(what: &str, len: usize, expected: usize) -> candle_core::Result<()> {
    if len != expected {
        candle_core::bail!("{what}: {len} elements where the shape needs {expected}")
    }
    Ok(())
}

/// `emu::Geometry` of `kernels/emu/host_cuda.h`.
#[repr(C)]
struct Geometry {
    grid: [u32; 3],
    block: [u32; 3],
    shared_bytes: usize,
}

/// `emu::Entry`: a kernel's name and its launcher over packed parameters.
#[repr(C)]
struct Entry {
    name: *const c_char,
    run: unsafe extern "C" fn(*const Geometry, *const *mut c_void),
}

// `TABLES`: each kernel source's `emu_kernels_<stem>`, from the build script.
include!(concat!(env!("OUT_DIR"), "/emulation_tables.rs"));

impl Entry {
    fn name(&self) -> &'static CStr {
        // SAFETY: each name is a static C string (the kernel's identifier).
        unsafe { CStr::from_ptr(self.name) }
    }
}

/// The emulated kernels of `kernels/{source}.cu`, or `None` for a source without a table.
fn entries(source: &str) -> Option<&'static [Entry]> {
    let (_, table) = TABLES.iter().find(|(stem, _)| *stem == source)?;
    let mut count = 0usize;
    // SAFETY: the table functions return a static array and its length.
    Some(unsafe { std::slice::from_raw_parts(table(&mut count), count) })
}

/// The emulated kernel `kernel` of `kernels/{source}.cu`.
fn entry(source: &str, kernel: &str) -> candle_core::Result<&'static Entry> {
    let Some(entries) = entries(source) else { candle_core::bail!("no emulated kernel source {source}.cu") };
    entries
        .iter()
        .find(|e| e.name().to_bytes() == kernel.as_bytes())
        .ok_or_else(|| candle_core::Error::Msg(format!("{source}.cu has no emulated kernel {kernel}")))
}

/// The names of every emulated kernel of `source`.
pub fn kernel_names(source: &str) -> Vec<String> {
    entries(source).unwrap_or_default().iter().map(|e| e.name().to_string_lossy().into_owned()).collect()
}

/// The emulation's executor. Scratch buffers and tables are host allocations, poisoned
/// with NaN bytes, that live as long as the executor.
#[derive(Default)]
pub struct Host {
    held: Vec<Vec<u128>>,
}

thread_local! {
    /// The launches this thread ran, for tests that look at the geometry.
    static RAN: std::cell::RefCell<Vec<Launch>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Whether launches on this thread are checked and recorded but not run.
    static DRY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The launches the emulation ran on this thread since the last call, in order.
pub fn launches_ran() -> Vec<Launch> {
    RAN.with(|ran| std::mem::take(&mut *ran.borrow_mut()))
}

/// Runs `f` with this thread's launches checked and recorded but not executed: the
/// geometry of shapes too large to emulate in a test.
pub fn without_running<R>(f: impl FnOnce() -> R) -> R {
    DRY.with(|dry| dry.set(true));
    let out = f();
    DRY.with(|dry| dry.set(false));
    out
}

impl Host {
    fn hold(&mut self, bytes: usize, fill: impl FnOnce(&mut [u8])) -> Buffer {
        let mut words = vec![u128::MAX; bytes.div_ceil(16).max(1)];
        // SAFETY: the words hold at least `bytes` bytes.
        fill(unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), bytes) });
        let buffer = Buffer { addr: words.as_ptr() as u64, bytes };
        self.held.push(words);
        buffer
    }
}

impl Executor for Host {
    fn scratch(&mut self, bytes: usize) -> candle_core::Result<Buffer> {
        Ok(self.hold(bytes, |_| {}))
    }

    fn table(&mut self, bytes: &[u8]) -> candle_core::Result<Buffer> {
        Ok(self.hold(bytes.len(), |to| to.copy_from_slice(bytes)))
    }

    fn run(&mut self, launch: &Launch) -> candle_core::Result<()> {
        launch.check()?;
        let entry = entry(launch.source, &launch.kernel)?;
        RAN.with(|ran| ran.borrow_mut().push(launch.clone()));
        if DRY.with(|dry| dry.get()) {
            return Ok(());
        }
        let mut params = launch.packed_params();
        let pointers: Vec<*mut c_void> = params.iter_mut().map(|w| w.as_mut_ptr().cast::<c_void>()).collect();
        let geometry =
            Geometry { grid: launch.grid, block: launch.block, shared_bytes: launch.shared_bytes as usize };
        // SAFETY: `check` found every buffer as large as the kernel's reach and aligned as
        // its loads need; the buffers are host memory the caller holds (or this executor
        // does) for the call; the parameters are packed in the kernel's order and types,
        // as the op's launch description gives them.
        unsafe { (entry.run)(&geometry, pointers.as_ptr()) };
        Ok(())
    }

    fn tensor_map(&mut self, spec: &TensorMapSpec) -> candle_core::Result<[u64; 16]> {
        Ok(spec.emulated_words())
    }
}

mod tma;
pub use tma::{named_handover, tma_box, tma_early_read, tma_misuse, tma_pipeline, EarlyRead, Misuse, TmaBox};
mod warp_matrix;
pub use warp_matrix::{gemm_16x8, ldmatrix_dump, mma_fragments, LdmatrixDump};
mod wgmma;
pub use wgmma::{
    wgmma_read_before_wait, wgmma_rs, wgmma_ss, wgmma_ss_chain, wgmma_without_proxy_fence, Accumulators,
    ReadBeforeWait, Wgmma, WARPGROUP,
};

pub use crate::attention::{AttentionShape, Segments};
pub use crate::ops::adamw_step::emulated::{adamw_step, AdamwState};
pub use crate::ops::cross_entropy::emulated::cross_entropy_rows;
pub use crate::ops::flash_attention::emulated::{flash_attention_bwd, flash_attention_fwd, AttentionGrads};
pub use crate::ops::flash_attention::Kernels;
pub use crate::ops::rms_norm::emulated::{rms_norm_bwd, rms_norm_fwd};
pub use crate::ops::rope::emulated::rope;
pub use crate::ops::swiglu::emulated::{swiglu_bwd, swiglu_fwd};
