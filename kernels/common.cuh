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
