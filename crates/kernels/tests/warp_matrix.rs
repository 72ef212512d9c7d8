//! The tensor-core wrappers of `kernels/mma.cuh` under the emulation, checked lane by lane
//! against the fragment layouts as NVIDIA's PTX ISA tabulates them (transcribed here from
//! the document, independently of the emulation's code):
//! - "Matrix Fragments for mma.m16n8k16 with floating point type" (A, B, C/D of
//!   `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`), the same layout as CUTLASS's
//!   `SM80_16x8x16_F32BF16BF16F32_TN` atom;
//! - `ldmatrix` `.m8n8` `.b16`, plain and `.trans`, as CUTLASS's `SM75_U32x{1,2,4}_LDSM_N/T`.
//!
//! Then the three together in a small GEMM against an f64 reference.

use common::values;
use davinci_kernels::emulated::{gemm_16x8, ldmatrix_dump, mma_fragments, Bf16};
use half::bf16;

mod common;

/// groupID and threadID_in_group, as the PTX ISA names them.
fn ids(lane: usize) -> (usize, usize) {
    (lane >> 2, lane % 4)
}

/// (row, col) of element a_i (i in 0..8) of lane `lane`'s A fragment.
fn a_position(lane: usize, i: usize) -> (usize, usize) {
    let (group, thread) = ids(lane);
    let row = if matches!(i, 0 | 1 | 4 | 5) { group } else { group + 8 };
    let col = if i < 4 { thread * 2 + (i & 1) } else { thread * 2 + (i & 1) + 8 };
    (row, col)
}

/// (row, col) of element b_i (i in 0..4) of the B fragment (B is k x n).
fn b_position(lane: usize, i: usize) -> (usize, usize) {
    let (group, thread) = ids(lane);
    let row = if i < 2 { thread * 2 + (i & 1) } else { thread * 2 + (i & 1) + 8 };
    (row, group)
}

/// (row, col) of element c_i (i in 0..4) of the C and D fragments.
fn c_position(lane: usize, i: usize) -> (usize, usize) {
    let (group, thread) = ids(lane);
    (if i < 2 { group } else { group + 8 }, thread * 2 + (i & 1))
}

fn bits(v: f32) -> u32 {
    bf16::from_f32(v).to_bits() as u32
}

/// Two bf16 elements in one register, the lower index in the lower half.
fn pack(lo: f32, hi: f32) -> u32 {
    bits(lo) | bits(hi) << 16
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

#[test]
fn ldmatrix_fragments_follow_the_ptx_layout() {
    // Element (matrix m, row r, col c) holds the number m * 64 + r * 8 + c, exact in bf16.
    let matrices: [Bf16; 256] = std::array::from_fn(|i| bf16::from_f32(i as f32).to_bits());
    let dump = ldmatrix_dump(&matrices);
    let value = |m: usize, r: usize, c: usize| bits((m * 64 + r * 8 + c) as f32);
    for lane in 0..32 {
        // A thread holds two consecutive elements of row lane / 4 ...
        let plain =
            |m: usize| value(m, lane / 4, (lane % 4) * 2) | value(m, lane / 4, (lane % 4) * 2 + 1) << 16;
        // ... or, transposed, of column lane / 4.
        let trans =
            |m: usize| value(m, (lane % 4) * 2, lane / 4) | value(m, (lane % 4) * 2 + 1, lane / 4) << 16;
        for m in 0..4 {
            assert_eq!(dump.x4[lane][m], plain(m), "x4 lane {lane} matrix {m}");
            assert_eq!(dump.x4_trans[lane][m], trans(m), "x4.trans lane {lane} matrix {m}");
        }
        for m in 0..2 {
            assert_eq!(dump.x2[lane][m], plain(m), "x2 lane {lane} matrix {m}");
            assert_eq!(dump.x2_trans[lane][m], trans(m), "x2.trans lane {lane} matrix {m}");
        }
        assert_eq!(dump.x1[lane], plain(0), "x1 lane {lane}");
        assert_eq!(dump.x1_trans[lane], trans(0), "x1.trans lane {lane}");
    }
}

#[test]
fn mma_fragments_follow_the_ptx_layout() {
    let a = rounded(&values(16 * 16, 1, 2.0)); // 16 x 16, row-major
    let b = rounded(&values(16 * 8, 2, 2.0)); // 16 x 8 (k x n), row-major
    let c = values(16 * 8, 3, 2.0);
    let a_frags: [[u32; 4]; 32] = std::array::from_fn(|lane| {
        std::array::from_fn(|reg| {
            let at = |i| {
                let (r, col) = a_position(lane, i);
                a[r * 16 + col]
            };
            pack(at(2 * reg), at(2 * reg + 1))
        })
    });
    let b_frags: [[u32; 2]; 32] = std::array::from_fn(|lane| {
        std::array::from_fn(|reg| {
            let at = |i| {
                let (r, col) = b_position(lane, i);
                b[r * 8 + col]
            };
            pack(at(2 * reg), at(2 * reg + 1))
        })
    });
    let c_frags: [[f32; 4]; 32] = std::array::from_fn(|lane| {
        std::array::from_fn(|i| {
            let (r, col) = c_position(lane, i);
            c[r * 8 + col]
        })
    });
    let d = mma_fragments(&a_frags, &b_frags, &c_frags);
    for (lane, d) in d.iter().enumerate() {
        for (i, &got) in d.iter().enumerate() {
            let (r, col) = c_position(lane, i);
            let want: f64 = c[r * 8 + col] as f64
                + (0..16).map(|k| a[r * 16 + k] as f64 * b[k * 8 + col] as f64).sum::<f64>();
            let got = got as f64;
            assert!(
                (got - want).abs() < 1e-5 * want.abs().max(1.0),
                "lane {lane} d{i} (row {r}, col {col}): {got} vs {want}"
            );
        }
    }
}

#[test]
fn cp_async_ldmatrix_and_mma_make_a_gemm() {
    for k in [16, 48] {
        let a = values(16 * k, 4 + k as u64, 1.0);
        let bt = values(8 * k, 5 + k as u64, 1.0);
        let to_bits = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect::<Vec<_>>();
        let d = gemm_16x8(&to_bits(&a), &to_bits(&bt), k);
        let (a, bt) = (rounded(&a), rounded(&bt));
        for r in 0..16 {
            for n in 0..8 {
                let want: f64 = (0..k).map(|i| a[r * k + i] as f64 * bt[n * k + i] as f64).sum();
                let got = d[r * 8 + n] as f64;
                assert!(
                    (got - want).abs() < 1e-4 * want.abs().max(1.0),
                    "k {k}: D[{r}][{n}] = {got}, want {want}"
                );
            }
        }
    }
}
