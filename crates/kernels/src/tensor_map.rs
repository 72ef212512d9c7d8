//! Tensor maps for TMA (`cp.async.bulk.tensor`): what `cuTensorMapEncodeTiled` takes, checked
//! the way its documentation requires before either executor encodes it, so that a map the
//! driver would refuse is refused here too, with the field and the reason. The device's
//! executor has the driver encode its opaque 128 bytes; the emulation's writes its own
//! fields instead ([`TensorMapSpec::emulated_words`], read by `emu::TensorMapFields` in
//! `kernels/emu/tma.h`). Kernels take the map by value (`const __grid_constant__
//! dv::sm90::TensorMap map`), passed as [`Arg::tensor_map`](crate::launch::Arg::tensor_map).
//!
//! Supported: tiled maps of bf16 or f32, without interleave, with element strides of 1,
//! out-of-bounds elements filled with zeros, and the plain swizzle modes (none, 32, 64 and
//! 128 bytes).

use crate::launch::{Buffer, Element};

/// Dimensions a tensor map has at most.
pub const MAX_RANK: usize = 5;
/// Elements a box has at most along each dimension.
pub const MAX_BOX: u32 = 256;
/// The first word of every map [`TensorMapSpec::emulated_words`] writes ("DVTMAP01"), which
/// the emulation checks before it trusts the rest (`emu::kTensorMapMagic`).
pub const EMULATED_MAGIC: u64 = 0x4456_544d_4150_3031;

/// How the box is laid out in shared memory: each 16-byte chunk of a 128-byte line is
/// permuted by an XOR with the line's address bits, over a span of 32, 64 or 128 bytes
/// (`CU_TENSOR_MAP_SWIZZLE_*`, PTX ISA "Swizzling Modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Swizzle {
    None,
    B32,
    B64,
    B128,
}

impl Swizzle {
    /// The span in bytes, 0 without swizzle.
    pub fn bytes(self) -> u32 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 32,
            Swizzle::B64 => 64,
            Swizzle::B128 => 128,
        }
    }
}

/// A map the driver would refuse, by field: `field()` names it as [`TensorMapSpec::new`]
/// does (`address`, `dims[2]`, `box_dims[0]`, ...), the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorMapError {
    #[error("dims: rank {0}: a tensor map has 1 to {MAX_RANK} dimensions")]
    Rank(usize),
    #[error("{field}: {found} entries for a rank-{rank} tensor, which needs {needed}")]
    Length { field: &'static str, found: usize, needed: usize, rank: usize },
    #[error("address: {0:#x} is not 16-byte aligned")]
    Address(u64),
    #[error("dims[{index}] = {value}: a dimension has 1 to 2^32 elements")]
    Dim { index: usize, value: u64 },
    #[error("strides[{index}] = {value}: a byte stride is a multiple of 16 below 2^40")]
    Stride { index: usize, value: u64 },
    #[error("box_dims[{index}] = {value}: a box has 1 to {MAX_BOX} elements along each dimension")]
    BoxDim { index: usize, value: u32 },
    #[error("box_dims[0]: the box's rows are {0} bytes, not a multiple of 16")]
    InnerBoxBytes(u64),
    #[error("box_dims[0]: the box's rows are {bytes} bytes, wider than the {span}-byte swizzle")]
    InnerBoxPastSwizzle { bytes: u64, span: u32 },
    #[error("buffer: the tensor reaches {reach} bytes past its address; the buffer holds {bytes}")]
    Reach { reach: u128, bytes: usize },
}

impl TensorMapError {
    /// The field the error is about, as [`TensorMapSpec::new`] names its arguments.
    pub fn field(&self) -> String {
        match self {
            TensorMapError::Rank(_) => "dims".into(),
            TensorMapError::Length { field, .. } => (*field).into(),
            TensorMapError::Address(_) => "address".into(),
            TensorMapError::Dim { index, .. } => format!("dims[{index}]"),
            TensorMapError::Stride { index, .. } => format!("strides[{index}]"),
            TensorMapError::BoxDim { index, .. } => format!("box_dims[{index}]"),
            TensorMapError::InnerBoxBytes(_) | TensorMapError::InnerBoxPastSwizzle { .. } => {
                "box_dims[0]".into()
            }
            TensorMapError::Reach { .. } => "buffer".into(),
        }
    }
}

impl From<TensorMapError> for candle_core::Error {
    fn from(e: TensorMapError) -> Self {
        candle_core::Error::Msg(format!("tensor map: {e}"))
    }
}

/// A tiled tensor map, valid by construction: a tensor of `element`s in `buffer`, `dims`
/// elements along each dimension (innermost first, the innermost contiguous), `strides` the
/// byte strides of the outer dimensions (dims 1 .. rank - 1), and the box a copy moves,
/// `box_dims` elements along each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMapSpec {
    buffer: Buffer,
    element: Element,
    dims: Vec<u64>,
    strides: Vec<u64>,
    box_dims: Vec<u32>,
    swizzle: Swizzle,
}

impl TensorMapSpec {
    /// Checks the map as `cuTensorMapEncodeTiled` documents its requirements: rank 1 to 5;
    /// the address 16-byte aligned (32 would be needed with interleave, which is not
    /// supported); each dimension 1 to 2^32 elements; byte strides multiples of 16 below
    /// 2^40; box dimensions 1 to 256, the box's rows (`box_dims[0]` elements) a multiple of
    /// 16 bytes and, with a swizzle, no wider than its span. And one check the driver cannot
    /// make: the tensor's last element lies within `buffer`.
    pub fn new(
        buffer: Buffer,
        element: Element,
        dims: &[u64],
        strides: &[u64],
        box_dims: &[u32],
        swizzle: Swizzle,
    ) -> Result<Self, TensorMapError> {
        let rank = dims.len();
        if !(1..=MAX_RANK).contains(&rank) {
            return Err(TensorMapError::Rank(rank));
        }
        for (field, found, needed) in
            [("strides", strides.len(), rank - 1), ("box_dims", box_dims.len(), rank)]
        {
            if found != needed {
                return Err(TensorMapError::Length { field, found, needed, rank });
            }
        }
        if !buffer.addr.is_multiple_of(16) {
            return Err(TensorMapError::Address(buffer.addr));
        }
        if let Some((index, &value)) = dims.iter().enumerate().find(|(_, &d)| d == 0 || d > 1 << 32) {
            return Err(TensorMapError::Dim { index, value });
        }
        if let Some((index, &value)) =
            strides.iter().enumerate().find(|(_, &s)| !s.is_multiple_of(16) || s >= 1 << 40)
        {
            return Err(TensorMapError::Stride { index, value });
        }
        if let Some((index, &value)) = box_dims.iter().enumerate().find(|(_, &b)| b == 0 || b > MAX_BOX) {
            return Err(TensorMapError::BoxDim { index, value });
        }
        let size = element.size() as u64;
        let row = box_dims[0] as u64 * size;
        if !row.is_multiple_of(16) {
            return Err(TensorMapError::InnerBoxBytes(row));
        }
        let span = swizzle.bytes();
        if span != 0 && row > span as u64 {
            return Err(TensorMapError::InnerBoxPastSwizzle { bytes: row, span });
        }
        // In u128: a dimension of 2^32 times a stride below 2^40 passes u64.
        let reach = (dims[0] * size) as u128
            + dims[1..].iter().zip(strides).map(|(&d, &s)| (d - 1) as u128 * s as u128).sum::<u128>();
        if reach > buffer.bytes as u128 {
            return Err(TensorMapError::Reach { reach, bytes: buffer.bytes });
        }
        Ok(Self {
            buffer,
            element,
            dims: dims.to_vec(),
            strides: strides.to_vec(),
            box_dims: box_dims.to_vec(),
            swizzle,
        })
    }

    pub fn buffer(&self) -> Buffer {
        self.buffer
    }

    pub fn element(&self) -> Element {
        self.element
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Elements along each dimension, innermost first.
    pub fn dims(&self) -> &[u64] {
        &self.dims
    }

    /// Byte strides of dimensions 1 .. rank - 1.
    pub fn strides(&self) -> &[u64] {
        &self.strides
    }

    /// The box's elements along each dimension, innermost first.
    pub fn box_dims(&self) -> &[u32] {
        &self.box_dims
    }

    pub fn swizzle(&self) -> Swizzle {
        self.swizzle
    }

    /// Bytes one copy of the box moves (what its `arrive.expect_tx` announces).
    pub fn box_bytes(&self) -> usize {
        self.box_dims.iter().map(|&b| b as usize).product::<usize>() * self.element.size()
    }

    /// The map as the emulation reads it (`emu::TensorMapFields`, on a little-endian host):
    /// word 0 [`EMULATED_MAGIC`], 1 the address, 2 the rank and (high half) the element's
    /// bytes, 3 the swizzle's span in bytes, 4-8 the dims (1 past the rank), 9-12 the
    /// strides (0 past it), 13-15 the box dims two a word, low half first (1 past the rank).
    pub fn emulated_words(&self) -> [u64; 16] {
        let dim = |d: usize| self.dims.get(d).copied().unwrap_or(1);
        let stride = |d: usize| self.strides.get(d).copied().unwrap_or(0);
        let boxed = |d: usize| self.box_dims.get(d).copied().unwrap_or(1) as u64;
        let mut words = [0u64; 16];
        words[0] = EMULATED_MAGIC;
        words[1] = self.buffer.addr;
        words[2] = self.rank() as u64 | (self.element.size() as u64) << 32;
        words[3] = self.swizzle.bytes() as u64;
        for d in 0..MAX_RANK {
            words[4 + d] = dim(d);
        }
        for d in 0..MAX_RANK - 1 {
            words[9 + d] = stride(d);
        }
        words[13] = boxed(0) | boxed(1) << 32;
        words[14] = boxed(2) | boxed(3) << 32;
        words[15] = boxed(4);
        words
    }
}
