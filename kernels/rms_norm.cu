// RMSNorm, forward and backward, for f32 and bf16 rows with f32 arithmetic.
//
// Forward, as transformers' Qwen2RMSNorm computes it: n = x * rstd with
// rstd = 1 / sqrt(mean(x^2) + eps) in f32, n rounded to the input dtype, y = w * n (rounded).
// Backward, with g = dy * w and n = x * rstd unrounded: dx = rstd * (g - n * mean(g * n)),
// and dw = the sum over rows of dy * n.
//
// Fused with the residual add (`residual` not null): the row is s = x + residual, rounded
// to the input dtype as transformers' `residual + hidden_states`, stored to `sum`, then
// normalised. Its backward adds the gradient that reaches s directly (`d_add`, not null)
// to dx, which is then the gradient of both x and residual.
//
// Launches: the forward and dx take one block per row (dx also stores each row's rstd);
// dw is summed without atomics, so it is the same on every run: `dw_partial` gives each
// (column block, row chunk) a thread per column that sums its chunk's rows, and `dw_sum`
// adds the chunks' partial sums in order.
#include "common.cuh"

template <class T>
__device__ __forceinline__ void rms_norm_fwd(const T* __restrict__ x, const T* __restrict__ residual,
                                             const T* __restrict__ w, T* __restrict__ sum_out, T* __restrict__ y,
                                             int cols, float eps) {
    DV_DYNAMIC_SHARED(float, scratch);
    const size_t row = blockIdx.x;
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    // The row's value at column c: x, or x + residual rounded (and stored) when fused.
    auto value = [&](int c) {
        if (residual == nullptr) return dv::to_float(xr[c]);
        const T s = dv::from_float<T>(dv::to_float(xr[c]) + dv::to_float(residual[row * cols + c]));
        return dv::to_float(s);
    };
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = value(c);
        if (residual != nullptr) sum_out[row * cols + c] = dv::from_float<T>(v);
        sum += v * v;
    }
    sum = dv::block_sum(sum, scratch);
    const float r = rsqrtf(sum / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float n = dv::to_float(dv::from_float<T>(value(c) * r));
        yr[c] = dv::from_float<T>(dv::to_float(w[c]) * n);
    }
}

template <class T>
__device__ __forceinline__ void rms_norm_bwd_dx(const T* __restrict__ x, const T* __restrict__ w,
                                                const T* __restrict__ dy, const T* __restrict__ d_add,
                                                T* __restrict__ dx, float* __restrict__ rstd, int cols, float eps) {
    DV_DYNAMIC_SHARED(float, scratch);
    const size_t row = blockIdx.x;
    const T* xr = x + row * cols;
    const T* dyr = dy + row * cols;
    float squares = 0.0f, dot = 0.0f;  // sum x^2, and sum dy * w * x
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = dv::to_float(xr[c]);
        squares += v * v;
        dot += dv::to_float(dyr[c]) * dv::to_float(w[c]) * v;
    }
    squares = dv::block_sum(squares, scratch);
    dot = dv::block_sum(dot, scratch);
    const float r = rsqrtf(squares / cols + eps);
    const float mean = dot * r / cols;  // mean(g * n)
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float g = dv::to_float(dyr[c]) * dv::to_float(w[c]);
        const float n = dv::to_float(xr[c]) * r;
        const float extra = d_add == nullptr ? 0.0f : dv::to_float(d_add[row * cols + c]);
        dx[row * cols + c] = dv::from_float<T>(r * (g - n * mean) + extra);
    }
    if (threadIdx.x == 0) rstd[row] = r;
}

template <class T>
__device__ __forceinline__ void rms_norm_bwd_dw_partial(const T* __restrict__ x, const T* __restrict__ dy,
                                                        const float* __restrict__ rstd, float* __restrict__ partial,
                                                        int rows, int cols, int rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const int first = blockIdx.y * rows_per_chunk;
    const int last = min(rows, first + rows_per_chunk);
    float acc = 0.0f;
    for (int row = first; row < last; ++row) {
        const size_t at = static_cast<size_t>(row) * cols + c;
        acc += dv::to_float(dy[at]) * dv::to_float(x[at]) * rstd[row];
    }
    partial[static_cast<size_t>(blockIdx.y) * cols + c] = acc;
}

template <class T>
__device__ __forceinline__ void rms_norm_bwd_dw_sum(const float* __restrict__ partial, T* __restrict__ dw,
                                                    int chunks, int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0.0f;
    for (int k = 0; k < chunks; ++k) acc += partial[static_cast<size_t>(k) * cols + c];
    dw[c] = dv::from_float<T>(acc);
}

// The kernels, by the unmangled names a launcher looks up.
#define RMS_NORM_KERNELS(S, T)                                                                                 \
    extern "C" __global__ void rms_norm_fwd_##S(const T* x, const T* residual, const T* w, T* sum, T* y,       \
                                                int cols, float eps) {                                         \
        rms_norm_fwd<T>(x, residual, w, sum, y, cols, eps);                                                    \
    }                                                                                                          \
    extern "C" __global__ void rms_norm_bwd_dx_##S(const T* x, const T* w, const T* dy, const T* d_add, T* dx,  \
                                                   float* rstd, int cols, float eps) {                         \
        rms_norm_bwd_dx<T>(x, w, dy, d_add, dx, rstd, cols, eps);                                              \
    }                                                                                                          \
    extern "C" __global__ void rms_norm_bwd_dw_partial_##S(const T* x, const T* dy, const float* rstd,          \
                                                           float* partial, int rows, int cols,                 \
                                                           int rows_per_chunk) {                               \
        rms_norm_bwd_dw_partial<T>(x, dy, rstd, partial, rows, cols, rows_per_chunk);                          \
    }                                                                                                          \
    extern "C" __global__ void rms_norm_bwd_dw_sum_##S(const float* partial, T* dw, int chunks, int cols) {    \
        rms_norm_bwd_dw_sum<T>(partial, dw, chunks, cols);                                                     \
    }
DV_FOR_EACH_TYPE(RMS_NORM_KERNELS)

DV_EMULATION_TABLE(rms_norm, DV_EMULATED(rms_norm_fwd_f32), DV_EMULATED(rms_norm_fwd_bf16),
                   DV_EMULATED(rms_norm_bwd_dx_f32), DV_EMULATED(rms_norm_bwd_dx_bf16),
                   DV_EMULATED(rms_norm_bwd_dw_partial_f32), DV_EMULATED(rms_norm_bwd_dw_partial_bf16),
                   DV_EMULATED(rms_norm_bwd_dw_sum_f32), DV_EMULATED(rms_norm_bwd_dw_sum_bf16))
