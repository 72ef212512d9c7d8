//! A kernel launch as data. Each op computes its launches once, in one function per kernel
//! (grid, block, dynamic shared memory, the arguments in the kernel's order, the tables it
//! reads), over an [`Executor`]: the device's hands the launch to the CUDA driver, the
//! emulation's runs the same kernel source on host threads with exactly that geometry and
//! those arguments. Only the final call differs, so the tests that run the emulation
//! exercise the launch code a GPU will run.
//!
//! [`Launch::check`] refuses what the device would refuse or fault on (more than 1024
//! threads, dynamic shared memory past the limit or past 48 KB without the opt-in, a
//! pointer not aligned as the kernel's loads need, a buffer smaller than the kernel's
//! reach), on both paths, before anything runs.

use std::fmt;

use crate::tensor_map::TensorMapSpec;

/// An address range the kernel sees: a device allocation (or part of one), or host memory
/// under the emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub addr: u64,
    pub bytes: usize,
}

impl Buffer {
    /// The range of a host slice (for the emulation).
    pub fn host<T>(slice: &[T]) -> Self {
        Self { addr: slice.as_ptr() as u64, bytes: std::mem::size_of_val(slice) }
    }

    /// The range of a host slice the kernel writes.
    pub fn host_mut<T>(slice: &mut [T]) -> Self {
        Self { addr: slice.as_mut_ptr() as u64, bytes: std::mem::size_of_val(slice) }
    }

    pub fn is_aligned(&self, align: usize) -> bool {
        self.addr.is_multiple_of(align as u64)
    }
}

/// One kernel parameter, in the kernel's order.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A pointer to `buffer`, of which the kernel reads or writes the first `reach` bytes
    /// with loads needing `align`-byte alignment.
    Buffer {
        name: &'static str,
        buffer: Buffer,
        reach: usize,
        align: usize,
    },
    /// A null pointer (an optional input or output left out).
    Null,
    I32(i32),
    U64(u64),
    F32(f32),
    /// A struct passed by value, as its `#[repr(C)]` bytes.
    Struct(Vec<u8>),
}

impl Arg {
    /// The parameter's bytes as the driver copies them.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Arg::Buffer { buffer, .. } => buffer.addr.to_ne_bytes().to_vec(),
            Arg::Null => 0u64.to_ne_bytes().to_vec(),
            Arg::I32(v) => v.to_ne_bytes().to_vec(),
            Arg::U64(v) => v.to_ne_bytes().to_vec(),
            Arg::F32(v) => v.to_ne_bytes().to_vec(),
            Arg::Struct(bytes) => bytes.clone(),
        }
    }

    /// A tensor map by value (`const __grid_constant__ dv::sm90::TensorMap`): the 128 bytes
    /// [`Executor::tensor_map`] made.
    pub fn tensor_map(words: &[u64; 16]) -> Self {
        Arg::Struct(plain_bytes(words))
    }
}

/// Dynamic shared memory a block gets without opting in.
pub const DEFAULT_SHARED_BYTES: u32 = 48 * 1024;
/// The opt-in limit of sm_90 (H100, H200: 227 KB), for kernels built for it alone.
pub const MAX_SHARED_BYTES_SM90: u32 = 227 * 1024;
/// The opt-in limit of the smallest architecture the kernels are built for (sm_80: 163 KB
/// a block; sm_90 allows 227 KB).
pub const MAX_SHARED_BYTES: u32 = 163 * 1024;

/// Whether a GPU of compute capability `major`.`minor` runs code built for sm_90a (the
/// `*_sm90.cu` sources): an `a` target's features run on exactly that capability, 9.0 (H100,
/// H200), and on no other, earlier or later.
pub fn runs_sm90a(major: u32, minor: u32) -> bool {
    (major, minor) == (9, 0)
}

/// Threads a block may have on every architecture.
pub const MAX_THREADS: u32 = 1024;

/// Threads per block of the elementwise kernels' grid-stride loops.
pub const ELEMENTWISE_THREADS: u32 = 256;

/// Bytes of the accesses in the memory-bound kernels' main loops (LDG.E.128).
pub const VECTOR_BYTES: usize = 16;

/// How a memory-bound kernel (RMSNorm, SwiGLU, RoPE) moves its element buffers: 16 bytes
/// at a time, which needs every buffer 16-byte aligned (and the op's shape to suit), or
/// one element at a time in the kernel's `_scalar_` twin, the same code, for the rest
/// (slices at odd offsets, odd lengths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Vector,
    Scalar,
}

impl Access {
    /// `Vector` where the shape allows it and every buffer is 16-byte aligned.
    pub fn of(shape_allows: bool, buffers: impl IntoIterator<Item = Buffer>) -> Self {
        if shape_allows && buffers.into_iter().all(|b| b.is_aligned(VECTOR_BYTES)) {
            Access::Vector
        } else {
            Access::Scalar
        }
    }

    /// The kernel's name: `{kernel}_{suffix}`, or `{kernel}_scalar_{suffix}`.
    pub fn kernel(self, kernel: &str, element: Element) -> String {
        match self {
            Access::Vector => format!("{kernel}_{}", element.suffix()),
            Access::Scalar => format!("{kernel}_scalar_{}", element.suffix()),
        }
    }

    /// Elements of `element` in one access.
    pub fn width(self, element: Element) -> usize {
        match self {
            Access::Vector => VECTOR_BYTES / element.size(),
            Access::Scalar => 1,
        }
    }

    /// The alignment the accesses need in a buffer of `size`-byte elements.
    pub fn align(self, size: usize) -> usize {
        match self {
            Access::Vector => VECTOR_BYTES,
            Access::Scalar => size,
        }
    }
}

/// Blocks of a grid-stride loop over `n` items (elements, or packs of them): one item a
/// thread, at most 4096 blocks (a million threads, enough to fill any GPU; the loop covers
/// the rest).
pub fn grid_stride_blocks(n: usize) -> u32 {
    n.div_ceil(ELEMENTWISE_THREADS as usize).clamp(1, 4096) as u32
}

/// One launch of kernel `kernel` of `kernels/{source}.cu`.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub source: &'static str,
    pub kernel: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    /// Whether the launcher raises the kernel's dynamic shared memory limit to
    /// `shared_bytes` first (needed past 48 KB).
    pub opt_in_shared: bool,
    /// The most dynamic shared memory the kernel's architectures allow.
    pub max_shared_bytes: u32,
    pub args: Vec<Arg>,
}

impl Launch {
    /// A one-dimensional launch of `blocks` x `threads`, without shared memory or arguments.
    pub fn new(source: &'static str, kernel: impl Into<String>, blocks: u32, threads: u32) -> Self {
        Self {
            source,
            kernel: kernel.into(),
            grid: [blocks, 1, 1],
            block: [threads, 1, 1],
            shared_bytes: 0,
            opt_in_shared: false,
            max_shared_bytes: MAX_SHARED_BYTES,
            args: Vec::new(),
        }
    }

    /// A kernel built for sm_90a alone, which may take Hopper's shared memory.
    pub fn hopper(mut self) -> Self {
        self.max_shared_bytes = MAX_SHARED_BYTES_SM90;
        self
    }

    pub fn grid_y(mut self, y: u32) -> Self {
        self.grid[1] = y;
        self
    }

    /// Dynamic shared memory, opting in past the default limit.
    pub fn shared(mut self, bytes: usize) -> Self {
        self.shared_bytes = bytes.min(u32::MAX as usize) as u32;
        self.opt_in_shared = self.shared_bytes > DEFAULT_SHARED_BYTES;
        self
    }

    /// A buffer the kernel reaches `reach` bytes into, with loads of `align` bytes.
    pub fn buffer(mut self, name: &'static str, buffer: Buffer, reach: usize, align: usize) -> Self {
        self.args.push(Arg::Buffer { name, buffer, reach, align });
        self
    }

    /// An optional buffer: the pointer, or null.
    pub fn maybe_buffer(
        self,
        name: &'static str,
        buffer: Option<Buffer>,
        reach: usize,
        align: usize,
    ) -> Self {
        match buffer {
            Some(buffer) => self.buffer(name, buffer, reach, align),
            None => self.arg(Arg::Null),
        }
    }

    pub fn arg(mut self, arg: Arg) -> Self {
        self.args.push(arg);
        self
    }

    /// Each parameter's bytes in 8-byte words, in order, so that every parameter is
    /// aligned as the driver (or the emulation) reads it.
    pub fn packed_params(&self) -> Vec<Vec<u64>> {
        self.args
            .iter()
            .map(|arg| {
                let bytes = arg.bytes();
                let mut words: Vec<u64> = bytes
                    .chunks(8)
                    .map(|chunk| {
                        let mut word = [0u8; 8];
                        word[..chunk.len()].copy_from_slice(chunk);
                        u64::from_ne_bytes(word)
                    })
                    .collect();
                words.resize(words.len().max(1), 0);
                words
            })
            .collect()
    }

    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&d| d as u64).product()
    }

    /// Refuses a launch the device would refuse, or one that would fault.
    pub fn check(&self) -> Result<(), LaunchError> {
        let refuse = |reason: String| Err(LaunchError { kernel: self.kernel.clone(), reason });
        if self.grid.contains(&0) || self.block.contains(&0) {
            return refuse(format!("an empty grid {:?} or block {:?}", self.grid, self.block));
        }
        if self.threads_per_block() > MAX_THREADS as u64 {
            return refuse(format!("{} threads a block (at most {MAX_THREADS})", self.threads_per_block()));
        }
        if self.block[2] > 64
            || self.grid[1] > 65_535
            || self.grid[2] > 65_535
            || self.grid[0] > i32::MAX as u32
        {
            return refuse(format!("grid {:?} x block {:?} past the device's limits", self.grid, self.block));
        }
        if self.shared_bytes > DEFAULT_SHARED_BYTES && !self.opt_in_shared {
            return refuse(format!(
                "{} bytes of dynamic shared memory without raising the kernel's limit past {DEFAULT_SHARED_BYTES}",
                self.shared_bytes
            ));
        }
        if self.shared_bytes > self.max_shared_bytes {
            return refuse(format!(
                "{} bytes of dynamic shared memory (its architectures allow {})",
                self.shared_bytes, self.max_shared_bytes
            ));
        }
        for arg in &self.args {
            if let Arg::Buffer { name, buffer, reach, align } = arg {
                if !buffer.addr.is_multiple_of(*align as u64) {
                    return refuse(format!(
                        "{name} at {:#x} is not aligned to the {align} bytes its loads need",
                        buffer.addr
                    ));
                }
                if buffer.bytes < *reach {
                    return refuse(format!(
                        "{name} holds {} bytes where the kernel reaches {reach}",
                        buffer.bytes
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A launch the device would refuse or fault on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel {kernel}: {reason}")]
pub struct LaunchError {
    pub kernel: String,
    pub reason: String,
}

impl From<LaunchError> for candle_core::Error {
    fn from(e: LaunchError) -> Self {
        candle_core::Error::Msg(e.to_string())
    }
}

/// Where launches run: the device, or the emulation.
pub trait Executor {
    /// A temporary buffer of `bytes` bytes that lives until the executor is dropped (the
    /// kernels fill it before reading it).
    fn scratch(&mut self, bytes: usize) -> candle_core::Result<Buffer>;
    /// A read-only table the kernels index (work lists, chunk lists). The device keeps
    /// uploaded tables by content, so a table used every step is uploaded once.
    fn table(&mut self, bytes: &[u8]) -> candle_core::Result<Buffer>;
    /// Checks the launch and runs it (on the device: queues it on the stream).
    fn run(&mut self, launch: &Launch) -> candle_core::Result<()>;
    /// The 128 bytes of a tensor map for TMA, for [`Arg::tensor_map`]: the driver's
    /// encoding on the device, the emulation's own fields under the emulation.
    fn tensor_map(&mut self, spec: &TensorMapSpec) -> candle_core::Result<[u64; 16]> {
        candle_core::bail!("this executor makes no tensor maps (asked for a rank-{} map)", spec.rank())
    }
}

/// The bytes of `#[repr(C)]` plain-data values, as a table or a by-value struct.
pub fn plain_bytes<T: Copy>(values: &[T]) -> Vec<u8> {
    // SAFETY: T is plain data (the callers' types are #[repr(C)] structs of integers and
    // floats without padding), so every byte is initialised.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
        .to_vec()
}

/// The kernels' element types, by the suffix of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    F32,
    Bf16,
}

impl Element {
    pub fn suffix(self) -> &'static str {
        match self {
            Element::F32 => "f32",
            Element::Bf16 => "bf16",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Element::F32 => 4,
            Element::Bf16 => 2,
        }
    }

    /// The element type of a candle dtype, if the kernels take it.
    pub fn of(op: &str, dtype: candle_core::DType) -> candle_core::Result<Self> {
        match dtype {
            candle_core::DType::F32 => Ok(Element::F32),
            candle_core::DType::BF16 => Ok(Element::Bf16),
            other => candle_core::bail!("{op}: the kernels take f32 or bf16, not {other:?}"),
        }
    }
}

impl fmt::Display for Launch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}::{} grid {:?} block {:?} shared {} B",
            self.source, self.kernel, self.grid, self.block, self.shared_bytes
        )
    }
}
