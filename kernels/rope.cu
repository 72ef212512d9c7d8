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
//
// Launches: a grid-stride loop, a thread per N consecutive pairs (i..i+N, i+h..i+h+N) of one
// (token, head). `rope_{fwd,bwd}_*` take N = 16 bytes of the input (4 f32 or 8 bf16), so
// they need h a multiple of N and x, y, cos and sin 16-byte aligned; the `_scalar_` twins,
// the same code with N = 1, take any even head_dim and alignment. A thread reads its pairs
// before writing them, so `y` may be `x` (in place).
#include "common.cuh"

template <class T>
__device__ __forceinline__ float rounded(float v) {
    return dv::to_float(dv::from_float<T>(v));
}

template <class T, int N, bool kBackward>
__device__ __forceinline__ void rope(const T* x, const float* __restrict__ cos, const float* __restrict__ sin, T* y,
                                     size_t tokens, int heads, int head_dim) {
    const int half = head_dim / 2, groups = half / N;
    const size_t items = tokens * heads * groups;
    for (size_t p = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; p < items;
         p += static_cast<size_t>(gridDim.x) * blockDim.x) {
        const int i = static_cast<int>(p % groups) * N;
        const size_t token = p / groups / heads;
        const size_t at = (p / groups) * head_dim + i;  // element i of this (token, head)
        const float* c = cos + token * head_dim;
        const float* s = sin + token * head_dim;
        const dv::Pack<float, N> c1 = dv::load<N>(c + i), c2 = dv::load<N>(c + i + half);
        const dv::Pack<float, N> s1 = dv::load<N>(s + i), s2 = dv::load<N>(s + i + half);
        const dv::Pack<T, N> xa = dv::load<N>(x + at), xb = dv::load<N>(x + at + half);
        dv::Pack<T, N> ya, yb;
        for (int k = 0; k < N; ++k) {
            const float a = dv::to_float(xa.v[k]), b = dv::to_float(xb.v[k]);
            if (kBackward) {
                ya.v[k] = dv::from_float<T>(a * rounded<T>(c1.v[k]) + b * rounded<T>(s2.v[k]));
                yb.v[k] = dv::from_float<T>(b * rounded<T>(c2.v[k]) - a * rounded<T>(s1.v[k]));
            } else {
                ya.v[k] = dv::from_float<T>(rounded<T>(a * rounded<T>(c1.v[k])) +
                                            rounded<T>(-b * rounded<T>(s1.v[k])));
                yb.v[k] = dv::from_float<T>(rounded<T>(b * rounded<T>(c2.v[k])) +
                                            rounded<T>(a * rounded<T>(s2.v[k])));
            }
        }
        dv::store<N>(y + at, ya);
        dv::store<N>(y + at + half, yb);
    }
}

// The kernels, by the unmangled names a launcher looks up: `V` is the name's infix and `N`
// the pairs a thread takes.
#define ROPE_KERNELS(S, T, V, N)                                                                               \
    extern "C" __global__ void rope_fwd##V##S(const T* x, const float* cos, const float* sin, T* y,            \
                                              size_t tokens, int heads, int head_dim) {                        \
        rope<T, N, false>(x, cos, sin, y, tokens, heads, head_dim);                                            \
    }                                                                                                          \
    extern "C" __global__ void rope_bwd##V##S(const T* dy, const float* cos, const float* sin, T* dx,          \
                                              size_t tokens, int heads, int head_dim) {                        \
        rope<T, N, true>(dy, cos, sin, dx, tokens, heads, head_dim);                                           \
    }
#define ROPE_BOTH(S, T) ROPE_KERNELS(S, T, _, dv::kPack<T>) ROPE_KERNELS(S, T, _scalar_, 1)
DV_FOR_EACH_TYPE(ROPE_BOTH)

DV_EMULATION_TABLE(rope, DV_EMULATED(rope_fwd_f32), DV_EMULATED(rope_fwd_bf16), DV_EMULATED(rope_bwd_f32),
                   DV_EMULATED(rope_bwd_bf16), DV_EMULATED(rope_fwd_scalar_f32), DV_EMULATED(rope_fwd_scalar_bf16),
                   DV_EMULATED(rope_bwd_scalar_f32), DV_EMULATED(rope_bwd_scalar_bf16))
