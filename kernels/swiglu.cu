// SwiGLU, forward and backward, elementwise over f32 or bf16 with f32 arithmetic.
//
// Forward, as transformers computes act(gate) * up for Qwen2's MLP: s = silu(gate), rounded
// to the input dtype, then y = s * up (rounded). Backward, with sg = sigmoid(gate):
// d_up = dy * silu(gate) and d_gate = dy * up * sg * (1 + gate * (1 - sg)).
//
// Launches: a grid-stride loop, so any launch size covers any length. `swiglu_{fwd,bwd}_*`
// take 16 bytes of each buffer at a time (4 f32 or 8 bf16 a thread and iteration) and need
// every buffer 16-byte aligned; the last n % 16-bytes' elements go one to a thread. The
// `_scalar_` twins, the same code an element at a time, take any alignment.
#include "common.cuh"

#include <type_traits>

namespace {
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + __expf(-x)); }

/// `at(i, pack)` for each pack of `N` elements (`i` its first element), grid-stride, then
/// `at(i, element)` for the n % N elements past the last pack, a thread each.
template <int N, class At>
__device__ __forceinline__ void grid_stride(size_t n, At at) {
    const size_t thread = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
    const size_t packs = n / N;
    for (size_t p = thread; p < packs; p += static_cast<size_t>(gridDim.x) * blockDim.x) {
        at(p * N, std::integral_constant<int, N>());
    }
    if (thread < n - packs * N) at(packs * N + thread, std::integral_constant<int, 1>());
}
}  // namespace

template <class T, int N>
__device__ __forceinline__ void swiglu_fwd(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ y,
                                           size_t n) {
    grid_stride<N>(n, [&](size_t i, auto width) {
        constexpr int W = decltype(width)::value;
        const dv::Pack<T, W> g = dv::load<W>(gate + i), u = dv::load<W>(up + i);
        dv::Pack<T, W> out;
        for (int k = 0; k < W; ++k) {
            const float gk = dv::to_float(g.v[k]);
            const float s = dv::to_float(dv::from_float<T>(gk * sigmoid(gk)));
            out.v[k] = dv::from_float<T>(s * dv::to_float(u.v[k]));
        }
        dv::store<W>(y + i, out);
    });
}

template <class T, int N>
__device__ __forceinline__ void swiglu_bwd(const T* __restrict__ gate, const T* __restrict__ up,
                                           const T* __restrict__ dy, T* __restrict__ d_gate, T* __restrict__ d_up,
                                           size_t n) {
    grid_stride<N>(n, [&](size_t i, auto width) {
        constexpr int W = decltype(width)::value;
        const dv::Pack<T, W> gs = dv::load<W>(gate + i), us = dv::load<W>(up + i), ds = dv::load<W>(dy + i);
        dv::Pack<T, W> dg, du;
        for (int k = 0; k < W; ++k) {
            const float g = dv::to_float(gs.v[k]), u = dv::to_float(us.v[k]), d = dv::to_float(ds.v[k]);
            const float sg = sigmoid(g);
            du.v[k] = dv::from_float<T>(d * g * sg);
            dg.v[k] = dv::from_float<T>(d * u * sg * (1.0f + g * (1.0f - sg)));
        }
        dv::store<W>(d_up + i, du);
        dv::store<W>(d_gate + i, dg);
    });
}

// The kernels, by the unmangled names a launcher looks up: `V` is the name's infix and `N`
// the elements an access moves.
#define SWIGLU_KERNELS(S, T, V, N)                                                                             \
    extern "C" __global__ void swiglu_fwd##V##S(const T* gate, const T* up, T* y, size_t n) {                 \
        swiglu_fwd<T, N>(gate, up, y, n);                                                                      \
    }                                                                                                          \
    extern "C" __global__ void swiglu_bwd##V##S(const T* gate, const T* up, const T* dy, T* d_gate, T* d_up,  \
                                                size_t n) {                                                    \
        swiglu_bwd<T, N>(gate, up, dy, d_gate, d_up, n);                                                       \
    }
#define SWIGLU_BOTH(S, T) SWIGLU_KERNELS(S, T, _, dv::kPack<T>) SWIGLU_KERNELS(S, T, _scalar_, 1)
DV_FOR_EACH_TYPE(SWIGLU_BOTH)

DV_EMULATION_TABLE(swiglu, DV_EMULATED(swiglu_fwd_f32), DV_EMULATED(swiglu_fwd_bf16), DV_EMULATED(swiglu_bwd_f32),
                   DV_EMULATED(swiglu_bwd_bf16), DV_EMULATED(swiglu_fwd_scalar_f32),
                   DV_EMULATED(swiglu_fwd_scalar_bf16), DV_EMULATED(swiglu_bwd_scalar_f32),
                   DV_EMULATED(swiglu_bwd_scalar_bf16))
