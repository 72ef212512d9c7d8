//! The self-test kernels of `kernels/mma_selftest.cu`, which expose the tensor-core
//! wrappers' fragments (`kernels/mma.cuh`) so that tests can check them lane by lane.

use super::Bf16;

mod ffi {
    use std::ffi::c_void;
    extern "C" {
        pub fn emu_ldmatrix_dump(src: *const c_void, out: *mut u32);
        pub fn emu_mma_fragments(a: *const u32, b: *const u32, c: *const f32, d: *mut f32);
        pub fn emu_gemm_16x8(a: *const c_void, bt: *const c_void, d: *mut f32, k: i32);
    }
}

/// Each lane's registers after loading four 8x8 bf16 matrices with every `ldmatrix` form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdmatrixDump {
    pub x4: [[u32; 4]; 32],
    pub x4_trans: [[u32; 4]; 32],
    pub x2: [[u32; 2]; 32],
    pub x2_trans: [[u32; 2]; 32],
    pub x1: [u32; 32],
    pub x1_trans: [u32; 32],
}

/// Runs `ldmatrix_dump` over four row-major 8x8 matrices, one after another.
pub fn ldmatrix_dump(matrices: &[Bf16; 256]) -> LdmatrixDump {
    let mut out = vec![u32::MAX; 32 * 16];
    // SAFETY: the kernel reads 256 bf16 values and writes 32 x 16 words.
    unsafe { ffi::emu_ldmatrix_dump(matrices.as_ptr().cast(), out.as_mut_ptr()) };
    let lane = |l: usize| &out[l * 16..(l + 1) * 16];
    LdmatrixDump {
        x4: std::array::from_fn(|l| std::array::from_fn(|j| lane(l)[j])),
        x4_trans: std::array::from_fn(|l| std::array::from_fn(|j| lane(l)[4 + j])),
        x2: std::array::from_fn(|l| std::array::from_fn(|j| lane(l)[8 + j])),
        x2_trans: std::array::from_fn(|l| std::array::from_fn(|j| lane(l)[10 + j])),
        x1: std::array::from_fn(|l| lane(l)[12]),
        x1_trans: std::array::from_fn(|l| lane(l)[13]),
    }
}

/// One `mma.m16n8k16` from per-lane fragments: `a[lane]`, `b[lane]`, `c[lane]` in, each
/// lane's `d` out.
pub fn mma_fragments(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &[[f32; 4]; 32]) -> [[f32; 4]; 32] {
    let mut d = [[f32::NAN; 4]; 32];
    // SAFETY: 32 lanes' fragments of 4, 2 and 4 words in, 32 x 4 floats out.
    unsafe {
        ffi::emu_mma_fragments(a.as_ptr().cast(), b.as_ptr().cast(), c.as_ptr().cast(), d.as_mut_ptr().cast())
    };
    d
}

/// `A (16 x k) B` with `bt` = B's transpose (`8 x k`), both row-major bf16; `k` a multiple
/// of 16. Returns D, 16 x 8 row-major.
pub fn gemm_16x8(a: &[Bf16], bt: &[Bf16], k: usize) -> Vec<f32> {
    assert!(k > 0 && k.is_multiple_of(16), "k = {k} must be a positive multiple of 16");
    assert_eq!(a.len(), 16 * k, "A must be 16 x k");
    assert_eq!(bt.len(), 8 * k, "B^T must be 8 x k");
    let mut d = vec![f32::NAN; 16 * 8];
    // SAFETY: the sizes were checked against the shapes the kernel reads and writes.
    unsafe { ffi::emu_gemm_16x8(a.as_ptr().cast(), bt.as_ptr().cast(), d.as_mut_ptr(), k as i32) };
    d
}
