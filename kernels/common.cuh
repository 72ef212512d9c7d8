// The one header every kernel includes. On the device it brings CUDA's types; on the host
// (DAVINCI_EMULATE, for tests) the emulation of the execution model. Whatever a kernel
// needs beyond plain C++ goes through here, so the host side has one place to emulate it.
#pragma once

#ifdef DAVINCI_EMULATE
#include "emu/bf16.h"
#include "emu/host_cuda.h"
#include "emu/warp_matrix.h"
#include "emu/intrinsics.h"
#else
#include <cuda_bf16.h>
#include <cstdint>
#define DV_DYNAMIC_SHARED(type, name)                 \
    extern __shared__ __align__(16) unsigned char dv_shared_bytes[]; \
    type* name = reinterpret_cast<type*>(dv_shared_bytes)
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

/// Sum over a warp; every lane gets it.
__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
/// `scratch` holds 32 floats of shared memory, free again when this returns.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = lane < warps ? scratch[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();
    return total;
}

}  // namespace dv

// 16-byte accesses, for kernels that stream a tensor through once or twice: one 16-byte
// load per instruction (LDG.E.128 on the device) puts four times the bytes of a float load
// in flight per thread, which is what keeps HBM busy (Little's law) without more threads.
// `#pragma unroll` on the device (a loop over a register array must be unrolled, or the
// array goes to local memory); nothing on the host, whose compiler does not know it.
#ifdef DAVINCI_EMULATE
#define DV_UNROLL
#else
#define DV_UNROLL _Pragma("unroll")
#endif

namespace dv {

/// 16 bytes moved by one load or store; the address must be 16-byte aligned.
struct alignas(16) Pack16 {
    uint32_t word[4];
};

__device__ __forceinline__ float float_of_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

__device__ __forceinline__ uint32_t bits_of_float(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return bits;
}

/// `T` in 16-byte packs: how many a pack holds, and a pack's elements as floats and back.
template <class T>
struct Packed;

template <>
struct Packed<float> {
    static constexpr int N = 4;
    __device__ __forceinline__ static void unpack(const Pack16& p, float* out) {
        DV_UNROLL for (int i = 0; i < 4; ++i) out[i] = float_of_bits(p.word[i]);
    }
    __device__ __forceinline__ static Pack16 pack(const float* in) {
        Pack16 p;
        DV_UNROLL for (int i = 0; i < 4; ++i) p.word[i] = bits_of_float(in[i]);
        return p;
    }
};

template <>
struct Packed<__nv_bfloat16> {
    static constexpr int N = 8;
    /// A bf16 is the top half of the f32 with the same value.
    __device__ __forceinline__ static void unpack(const Pack16& p, float* out) {
        DV_UNROLL for (int i = 0; i < 4; ++i) {
            out[2 * i] = float_of_bits(p.word[i] << 16);
            out[2 * i + 1] = float_of_bits(p.word[i] & 0xffff0000u);
        }
    }
    /// Each value rounded to bf16 (nearest even), as `from_float` rounds.
    __device__ __forceinline__ static Pack16 pack(const float* in) {
        Pack16 p;
        DV_UNROLL for (int i = 0; i < 4; ++i) {
            const __nv_bfloat16 lo = __float2bfloat16(in[2 * i]), hi = __float2bfloat16(in[2 * i + 1]);
            uint16_t lo_bits, hi_bits;
            memcpy(&lo_bits, &lo, 2);
            memcpy(&hi_bits, &hi, 2);
            p.word[i] = static_cast<uint32_t>(lo_bits) | (static_cast<uint32_t>(hi_bits) << 16);
        }
        return p;
    }
};

}  // namespace dv
