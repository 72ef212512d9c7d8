// The tensor-core instructions the matrix kernels use, each in one place: inline PTX on the
// device, a warp-collective emulation on the host (DAVINCI_EMULATE) that follows the
// fragment layouts of NVIDIA's PTX ISA:
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32  (section 9.7.14.5.8, "Matrix
//     Fragments for mma.m16n8k16 with floating point type"; CUTLASS's
//     SM80_16x8x16_F32BF16BF16F32_TN atom);
//   ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16  (section 9.7.14.5.15;
//     CUTLASS's SM75_U32x{1,2,4}_LDSM_N and _T atoms);
//   cp.async.cg.shared.global 16 bytes (and .ca 4 bytes) with commit_group / wait_group
//     (section 9.7.9.25).
// With g = lane / 4 and t = lane % 4, a lane holds
//   A (16x16, row-major): a[j] packs elements (row g + 8 (j % 2), cols 2t, 2t + 1 + 8 (j / 2)),
//   B (16x8, "col": k x n): b[j] packs (rows k = 2t, 2t + 1 + 8 j, col n = g),
//   C and D (16x8 f32): c[i] is (row g + 8 (i / 2), col 2t + i % 2),
// the element with the lower index in the lower 16 bits. The emulation cannot show timing,
// bank conflicts, or the asynchrony of cp.async (its copies land at once, so a missing
// wait_group goes unseen here; the race check and a GPU run see it).
#pragma once

#include "common.cuh"

namespace dv {

/// D = A B + C for one warp's 16x8x16 tile.
__device__ __forceinline__ void mma_bf16_16x8x16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                 const float c[4]) {
#ifdef DAVINCI_EMULATE
    emu::mma_bf16_16x8x16(d, a, b, c);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#endif
}

/// Loads N (1, 2 or 4) 8x8 b16 matrices from shared memory: lane l gives the address of row
/// l % 8 of matrix l / 8 (lanes past 8 N give none); r[j] gets lane l's piece of matrix j,
/// (row l / 4, cols 2 (l % 4), +1), or with kTrans (rows 2 (l % 4), +1, col l / 4).
template <int N, bool kTrans>
__device__ __forceinline__ void ldmatrix(uint32_t r[N], const void* row) {
    static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
#ifdef DAVINCI_EMULATE
    emu::ldmatrix(N, kTrans, r, row);
#else
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
    if constexpr (N == 1 && !kTrans) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(address)
                     : "memory");
    } else if constexpr (N == 1) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(address)
                     : "memory");
    } else if constexpr (N == 2 && !kTrans) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(address)
                     : "memory");
    } else if constexpr (N == 2) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(address)
                     : "memory");
    } else if constexpr (!kTrans) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(address)
                     : "memory");
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(address)
                     : "memory");
    }
#endif
}

/// Starts copying 16 bytes from global to shared memory (both 16-byte aligned).
__device__ __forceinline__ void cp_async_16(void* shared, const void* global) {
#ifdef DAVINCI_EMULATE
    std::memcpy(shared, global, 16);
#else
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(global) : "memory");
#endif
}

/// As `cp_async_16`, but when `valid` is false nothing is read and the 16 shared bytes are
/// zeroed (the instruction's src-size operand set to 0).
__device__ __forceinline__ void cp_async_16_or_zero(void* shared, const void* global, bool valid) {
#ifdef DAVINCI_EMULATE
    if (valid) {
        std::memcpy(shared, global, 16);
    } else {
        std::memset(shared, 0, 16);
    }
#else
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(global), "r"(bytes)
                 : "memory");
#endif
}

/// As `cp_async_16_or_zero` for 4 bytes (both 4-byte aligned), through L1 (`.ca`: the
/// 4-byte form has no `.cg`).
__device__ __forceinline__ void cp_async_4_or_zero(void* shared, const void* global, bool valid) {
#ifdef DAVINCI_EMULATE
    if (valid) {
        std::memcpy(shared, global, 4);
    } else {
        std::memset(shared, 0, 4);
    }
#else
    const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
    const int bytes = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(address), "l"(global), "r"(bytes)
                 : "memory");
#endif
}

/// Closes the group of copies started since the last commit.
__device__ __forceinline__ void cp_async_commit() {
#ifndef DAVINCI_EMULATE
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

/// Waits until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#ifndef DAVINCI_EMULATE
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

/// Two floats as a bf16 pair, the lower index in the lower 16 bits.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat16 l = __float2bfloat16(lo), h = __float2bfloat16(hi);
    return static_cast<uint32_t>(reinterpret_cast<const unsigned short&>(l)) |
           (static_cast<uint32_t>(reinterpret_cast<const unsigned short&>(h)) << 16);
}

}  // namespace dv
