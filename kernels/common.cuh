// The one header every kernel includes. On the device it brings CUDA's types; on the host
// (DAVINCI_EMULATE, for tests) the emulation of the execution model. Whatever a kernel
// needs beyond plain C++ goes through here, so the host side has one place to emulate it.
#pragma once

#ifdef DAVINCI_EMULATE
#include "emu/bf16.h"
#include "emu/host_cuda.h"
#include "emu/warp_matrix.h"
#include "emu/hopper.h"
#include "emu/intrinsics.h"
#else
#include <cuda_bf16.h>
#include <cstdint>
// The block's dynamic shared memory as `type* name`, aligned to `bytes` (one alignment per
// source file: every declaration names the same window).
#define DV_DYNAMIC_SHARED_ALIGNED(type, name, bytes)                    \
    extern __shared__ __align__(bytes) unsigned char dv_shared_bytes[]; \
    type* name = reinterpret_cast<type*>(dv_shared_bytes)
#define DV_DYNAMIC_SHARED(type, name) DV_DYNAMIC_SHARED_ALIGNED(type, name, 16)
// The emulation's kernel tables have no meaning on the device.
#define DV_EMULATION_TABLE(...)
#endif

// Instantiates `M(suffix, type)` for each element type the kernels take, so that every
// kernel exists as `name_f32` and `name_bf16` under unmangled names.
#define DV_FOR_EACH_TYPE(M) M(f32, float) M(bf16, __nv_bfloat16)

namespace dv {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
    return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

/// 2^x by the MUFU instruction alone (`ex2.approx.ftz.f32`): exp2f wraps the same
/// instruction in a few more to keep subnormal results, which softmax does not need. Within
/// exp2f's 2 ulp otherwise; results below the normal range flush to zero, and 2^-inf = 0.
__device__ __forceinline__ float fast_exp2(float x) {
#ifdef DAVINCI_EMULATE
    return emu::device_fast_exp2(x);
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#endif
}

/// Sum over a warp; every lane gets it.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/// Sum over each row of the block, the threads sharing threadIdx.y (blockDim.x a multiple of
/// 32; a one-dimensional block is one row); every thread gets its row's. `scratch` holds 32
/// floats of shared memory (a float per warp), free again when this returns.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    float* row = scratch + threadIdx.y * warps;
    v = warp_sum(v);
    if (lane == 0) row[warp] = v;
    __syncthreads();
    float total = lane < warps ? row[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();
    return total;
}

/// `N` consecutive elements that one access moves: the memory-bound kernels' main loops take
/// 16 bytes at a time (`kPack<T>` elements, LDG.E.128), which needs 16-byte aligned
/// addresses; their fallbacks for unaligned buffers are the same code with `N` = 1. Past 16
/// bytes (8 f32) a pack is several 16-byte accesses.
template <class T, int N>
struct alignas(sizeof(T) * N < 16 ? sizeof(T) * N : 16) Pack {
    T v[N];
};

/// Elements of `T` in one 16-byte access.
template <class T>
inline constexpr int kPack = 16 / static_cast<int>(sizeof(T));

#ifndef DAVINCI_EMULATE
/// The unsigned word of one access of `Bytes` bytes: a pack moves as these, whatever its
/// element type (a struct copy of bf16 elements may go element by element).
template <int Bytes>
struct Word;
template <>
struct Word<2> {
    using type = unsigned short;
};
template <>
struct Word<4> {
    using type = unsigned int;
};
template <>
struct Word<8> {
    using type = uint2;
};
template <>
struct Word<16> {
    using type = uint4;
};
#endif

/// Loads the pack at `p`, in accesses as wide as its alignment.
template <int N, class T>
__device__ __forceinline__ Pack<T, N> load(const T* p) {
    Pack<T, N> value;
#ifdef DAVINCI_EMULATE
    std::memcpy(&value, p, sizeof value);
#else
    using W = typename Word<alignof(Pack<T, N>)>::type;
    W words[sizeof value / sizeof(W)];
    for (int i = 0; i < static_cast<int>(sizeof value / sizeof(W)); ++i) words[i] = reinterpret_cast<const W*>(p)[i];
    memcpy(&value, words, sizeof value);
#endif
    return value;
}

/// Stores `value` at `p`, in accesses as wide as its alignment.
template <int N, class T>
__device__ __forceinline__ void store(T* p, const Pack<T, N>& value) {
#ifdef DAVINCI_EMULATE
    std::memcpy(p, &value, sizeof value);
#else
    using W = typename Word<alignof(Pack<T, N>)>::type;
    W words[sizeof value / sizeof(W)];
    memcpy(words, &value, sizeof value);
    for (int i = 0; i < static_cast<int>(sizeof value / sizeof(W)); ++i) reinterpret_cast<W*>(p)[i] = words[i];
#endif
}

/// A pack's elements as floats (exact: every bf16 is a float).
template <class T, int N>
__device__ __forceinline__ void to_floats(const Pack<T, N>& pack, float* out) {
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = to_float(pack.v[i]);
}

/// Floats as a pack of T, each rounded as `from_float` rounds (bf16: nearest even).
template <class T, int N>
__device__ __forceinline__ Pack<T, N> from_floats(const float* in) {
    Pack<T, N> pack;
#pragma unroll
    for (int i = 0; i < N; ++i) pack.v[i] = from_float<T>(in[i]);
    return pack;
}

}  // namespace dv
