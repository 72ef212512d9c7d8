// Rotary position embedding over q or k of shape [tokens, heads, head_dim], with the
// cos/sin tables of the packed row ([tokens, head_dim], f32, from per-document positions).
//
// Forward, in transformers' rounding order: with c and s the table entries rounded to the
// input dtype and h = head_dim / 2,
//   y[i]     = round(round(x[i] * c[i])         + round(-x[i + h] * s[i]))
//   y[i + h] = round(round(x[i + h] * c[i + h]) + round(x[i] * s[i + h])).
// Backward (the transpose of that rotation, in f32, rounded once):
//   dx[i]     = dy[i] * c[i] + dy[i + h] * s[i + h]
//   dx[i + h] = dy[i + h] * c[i + h] - dy[i] * s[i].
// One thread per (token, head, i < h) pair in a grid-stride loop. A thread reads its pair
// before writing it, so `y` may be `x` (in place).
#include "common.cuh"

template <class T>
__device__ __forceinline__ float rounded(float v) {
    return dv::to_float(dv::from_float<T>(v));
}

template <class T, bool kBackward>
__device__ __forceinline__ void rope(const T* x, const float* __restrict__ cos, const float* __restrict__ sin, T* y,
                                     size_t tokens, int heads, int head_dim) {
    const int half = head_dim / 2;
    const size_t pairs = tokens * heads * half;
    for (size_t p = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; p < pairs;
         p += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const int i = static_cast<int>(p % half);
        const size_t token = p / half / heads;
        const size_t at = (p / half) * head_dim + i;  // element i of this (token, head)
        const float* c = cos + token * head_dim;
        const float* s = sin + token * head_dim;
        const float c1 = rounded<T>(c[i]), c2 = rounded<T>(c[i + half]);
        const float s1 = rounded<T>(s[i]), s2 = rounded<T>(s[i + half]);
        const float a = dv::to_float(x[at]), b = dv::to_float(x[at + half]);
        if (kBackward) {
            y[at] = dv::from_float<T>(a * c1 + b * s2);
            y[at + half] = dv::from_float<T>(b * c2 - a * s1);
        } else {
            y[at] = dv::from_float<T>(rounded<T>(a * c1) + rounded<T>(-b * s1));
            y[at + half] = dv::from_float<T>(rounded<T>(b * c2) + rounded<T>(a * s2));
        }
    }
}

#define ROPE_KERNELS(S, T)                                                                                     \
    extern "C" __global__ void rope_fwd_##S(const T* x, const float* cos, const float* sin, T* y, size_t tokens, \
                                            int heads, int head_dim) {                                         \
        rope<T, false>(x, cos, sin, y, tokens, heads, head_dim);                                               \
    }                                                                                                          \
    extern "C" __global__ void rope_bwd_##S(const T* dy, const float* cos, const float* sin, T* dx,            \
                                            size_t tokens, int heads, int head_dim) {                          \
        rope<T, true>(dy, cos, sin, dx, tokens, heads, head_dim);                                              \
    }
DV_FOR_EACH_TYPE(ROPE_KERNELS)

DV_EMULATION_TABLE(rope, DV_EMULATED(rope_fwd_f32), DV_EMULATED(rope_fwd_bf16), DV_EMULATED(rope_bwd_f32),
                   DV_EMULATED(rope_bwd_bf16))
