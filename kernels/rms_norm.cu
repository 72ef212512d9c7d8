// RMSNorm, forward and backward, for f32 and bf16 rows with f32 arithmetic.
//
// Forward, as transformers' Qwen2RMSNorm computes it: n = x * rstd with
// rstd = 1 / sqrt(mean(x^2) + eps) in f32, n rounded to the input dtype, y = w * n (rounded).
// rstd is saved per row for the backward.
// Backward: with g = dy * w, dx = rstd * (g - n * mean(g * n)) and dw = sum over rows of
// dy * n (n in f32). One block per row for the forward and dx; dw is a second kernel with
// a thread per column walking the rows, so no atomics are needed.
#include "common.cuh"

template <class T>
__device__ __forceinline__ void rms_norm_fwd(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                             float* __restrict__ rstd, int cols, float eps) {
    DV_DYNAMIC_SHARED(float, scratch);
    const size_t row = blockIdx.x;
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = dv::to_float(xr[c]);
        sum += v * v;
    }
    sum = dv::block_sum(sum, scratch);
    const float r = rsqrtf(sum / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float n = dv::to_float(dv::from_float<T>(dv::to_float(xr[c]) * r));
        yr[c] = dv::from_float<T>(dv::to_float(w[c]) * n);
    }
    if (threadIdx.x == 0) rstd[row] = r;
}

template <class T>
__device__ __forceinline__ void rms_norm_bwd_dx(const T* __restrict__ x, const T* __restrict__ w, const float* __restrict__ rstd,
                                const T* __restrict__ dy, T* __restrict__ dx, int cols) {
    DV_DYNAMIC_SHARED(float, scratch);
    const size_t row = blockIdx.x;
    const T* xr = x + row * cols;
    const T* dyr = dy + row * cols;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        dot += dv::to_float(dyr[c]) * dv::to_float(w[c]) * dv::to_float(xr[c]) * r;
    }
    const float mean = dv::block_sum(dot, scratch) / cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float g = dv::to_float(dyr[c]) * dv::to_float(w[c]);
        const float n = dv::to_float(xr[c]) * r;
        dx[row * cols + c] = dv::from_float<T>(r * (g - n * mean));
    }
}

template <class T>
__device__ __forceinline__ void rms_norm_bwd_dw(const T* __restrict__ x, const float* __restrict__ rstd, const T* __restrict__ dy,
                                float* __restrict__ dw, int rows, int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0.0f;
    for (int row = 0; row < rows; ++row) {
        const size_t at = static_cast<size_t>(row) * cols + c;
        acc += dv::to_float(dy[at]) * dv::to_float(x[at]) * rstd[row];
    }
    dw[c] = acc;
}

// The kernels, by the unmangled names a launcher looks up.
extern "C" {
__global__ void rms_norm_fwd_f32(const float* x, const float* w, float* y, float* rstd, int cols, float eps) {
    rms_norm_fwd<float>(x, w, y, rstd, cols, eps);
}
__global__ void rms_norm_fwd_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, float* rstd,
                                  int cols, float eps) {
    rms_norm_fwd<__nv_bfloat16>(x, w, y, rstd, cols, eps);
}
__global__ void rms_norm_bwd_dx_f32(const float* x, const float* w, const float* rstd, const float* dy, float* dx,
                                    int cols) {
    rms_norm_bwd_dx<float>(x, w, rstd, dy, dx, cols);
}
__global__ void rms_norm_bwd_dx_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                                     const __nv_bfloat16* dy, __nv_bfloat16* dx, int cols) {
    rms_norm_bwd_dx<__nv_bfloat16>(x, w, rstd, dy, dx, cols);
}
__global__ void rms_norm_bwd_dw_f32(const float* x, const float* rstd, const float* dy, float* dw, int rows, int cols) {
    rms_norm_bwd_dw<float>(x, rstd, dy, dw, rows, cols);
}
__global__ void rms_norm_bwd_dw_bf16(const __nv_bfloat16* x, const float* rstd, const __nv_bfloat16* dy, float* dw,
                                     int rows, int cols) {
    rms_norm_bwd_dw<__nv_bfloat16>(x, rstd, dy, dw, rows, cols);
}
}

#ifdef DAVINCI_EMULATE
// Host entry points for the emulated tests: the same launch geometry the device uses.
extern "C" {
void emu_rms_norm_fwd(int bf16, const void* x, const void* w, void* y, float* rstd, int rows, int cols, float eps,
                      int threads) {
    const size_t shared = 32 * sizeof(float);
    if (bf16) {
        emu::launch(dim3(rows), dim3(threads), shared, rms_norm_fwd_bf16, static_cast<const __nv_bfloat16*>(x),
                    static_cast<const __nv_bfloat16*>(w), static_cast<__nv_bfloat16*>(y), rstd, cols, eps);
    } else {
        emu::launch(dim3(rows), dim3(threads), shared, rms_norm_fwd_f32, static_cast<const float*>(x),
                    static_cast<const float*>(w), static_cast<float*>(y), rstd, cols, eps);
    }
}

void emu_rms_norm_bwd(int bf16, const void* x, const void* w, const float* rstd, const void* dy, void* dx, float* dw,
                      int rows, int cols, int threads) {
    const size_t shared = 32 * sizeof(float);
    const unsigned column_blocks = (cols + threads - 1) / threads;
    if (bf16) {
        using B = __nv_bfloat16;
        emu::launch(dim3(rows), dim3(threads), shared, rms_norm_bwd_dx_bf16, static_cast<const B*>(x),
                    static_cast<const B*>(w), rstd, static_cast<const B*>(dy), static_cast<B*>(dx), cols);
        emu::launch(dim3(column_blocks), dim3(threads), 0, rms_norm_bwd_dw_bf16, static_cast<const B*>(x), rstd,
                    static_cast<const B*>(dy), dw, rows, cols);
    } else {
        emu::launch(dim3(rows), dim3(threads), shared, rms_norm_bwd_dx_f32, static_cast<const float*>(x),
                    static_cast<const float*>(w), rstd, static_cast<const float*>(dy), static_cast<float*>(dx), cols);
        emu::launch(dim3(column_blocks), dim3(threads), 0, rms_norm_bwd_dw_f32, static_cast<const float*>(x), rstd,
                    static_cast<const float*>(dy), dw, rows, cols);
    }
}
}
#endif
