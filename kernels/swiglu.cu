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

#ifdef DAVINCI_EMULATE
extern "C" {
void emu_swiglu_fwd(int bf16, const void* gate, const void* up, void* y, size_t n, int blocks, int threads) {
    using B = __nv_bfloat16;
    if (bf16) {
        emu::launch(dim3(blocks), dim3(threads), 0, swiglu_fwd_bf16, static_cast<const B*>(gate),
                    static_cast<const B*>(up), static_cast<B*>(y), n);
    } else {
        emu::launch(dim3(blocks), dim3(threads), 0, swiglu_fwd_f32, static_cast<const float*>(gate),
                    static_cast<const float*>(up), static_cast<float*>(y), n);
    }
}

void emu_swiglu_bwd(int bf16, const void* gate, const void* up, const void* dy, void* d_gate, void* d_up, size_t n,
                    int blocks, int threads) {
    using B = __nv_bfloat16;
    if (bf16) {
        emu::launch(dim3(blocks), dim3(threads), 0, swiglu_bwd_bf16, static_cast<const B*>(gate),
                    static_cast<const B*>(up), static_cast<const B*>(dy), static_cast<B*>(d_gate),
                    static_cast<B*>(d_up), n);
    } else {
        emu::launch(dim3(blocks), dim3(threads), 0, swiglu_bwd_f32, static_cast<const float*>(gate),
                    static_cast<const float*>(up), static_cast<const float*>(dy), static_cast<float*>(d_gate),
                    static_cast<float*>(d_up), n);
    }
}
}
#endif
