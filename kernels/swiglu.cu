// SwiGLU, forward and backward, elementwise over f32 or bf16 with f32 arithmetic.
//
// Forward, as transformers computes act(gate) * up for Qwen2's MLP: s = silu(gate), rounded
// to the input dtype, then y = s * up (rounded). Backward, with sg = sigmoid(gate):
// d_up = dy * silu(gate) and d_gate = dy * up * sg * (1 + gate * (1 - sg)).
// A grid-stride loop, so any launch size covers any length.
#include "common.cuh"

namespace {
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }
}  // namespace

template <class T>
__device__ __forceinline__ void swiglu_fwd(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ y,
                                           size_t n) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const float g = dv::to_float(gate[i]);
        const float s = dv::to_float(dv::from_float<T>(g * sigmoid(g)));
        y[i] = dv::from_float<T>(s * dv::to_float(up[i]));
    }
}

template <class T>
__device__ __forceinline__ void swiglu_bwd(const T* __restrict__ gate, const T* __restrict__ up,
                                           const T* __restrict__ dy, T* __restrict__ d_gate, T* __restrict__ d_up,
                                           size_t n) {
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
         i += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const float g = dv::to_float(gate[i]), u = dv::to_float(up[i]), d = dv::to_float(dy[i]);
        const float sg = sigmoid(g);
        d_up[i] = dv::from_float<T>(d * g * sg);
        d_gate[i] = dv::from_float<T>(d * u * sg * (1.0f + g * (1.0f - sg)));
    }
}

extern "C" {
__global__ void swiglu_fwd_f32(const float* gate, const float* up, float* y, size_t n) {
    swiglu_fwd<float>(gate, up, y, n);
}
__global__ void swiglu_fwd_bf16(const __nv_bfloat16* gate, const __nv_bfloat16* up, __nv_bfloat16* y, size_t n) {
    swiglu_fwd<__nv_bfloat16>(gate, up, y, n);
}
__global__ void swiglu_bwd_f32(const float* gate, const float* up, const float* dy, float* d_gate, float* d_up,
                               size_t n) {
    swiglu_bwd<float>(gate, up, dy, d_gate, d_up, n);
}
__global__ void swiglu_bwd_bf16(const __nv_bfloat16* gate, const __nv_bfloat16* up, const __nv_bfloat16* dy,
                                __nv_bfloat16* d_gate, __nv_bfloat16* d_up, size_t n) {
    swiglu_bwd<__nv_bfloat16>(gate, up, dy, d_gate, d_up, n);
}
}

DV_EMULATION_TABLE(swiglu, DV_EMULATED(swiglu_fwd_f32), DV_EMULATED(swiglu_fwd_bf16), DV_EMULATED(swiglu_bwd_f32),
                   DV_EMULATED(swiglu_bwd_bf16))
