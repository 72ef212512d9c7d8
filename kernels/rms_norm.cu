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
// Launches:
// - the forward and dx (which also stores each row's rstd): `rms_norm_fwd_*` and
//   `rms_norm_bwd_dx_*` keep the row in registers between its sum of squares and its
//   normalisation, so each input is read once: a thread holds kRowElements elements of a
//   row in 16-byte packs (4 f32 or 8 bf16), pack k * blockDim.x + threadIdx.x, all loaded
//   before any is used. A block is blockDim.y rows side by side, blockDim.x threads (a
//   multiple of 32) each. They need the columns a multiple of the pack and at most
//   blockDim.x * kRowElements (8192 at 512 threads), and every buffer 16-byte aligned. The
//   `_scalar_` twins take any row: a block per row, an element at a time, the row read twice.
// - dw, summed without atomics so it is the same on every run: `dw_partial` gives each
//   (column block, row chunk) a thread per pack of columns that sums its chunk's rows, four
//   rows' loads at a time, and `dw_sum` adds the chunks' partial sums in order. The `_scalar_`
//   twins take a column a thread (columns not a multiple of the pack, or unaligned buffers).
#include "common.cuh"

#include <type_traits>

/// Elements of a row each thread of the row kernels holds (in 16-byte packs): 16 keeps the
/// dx kernel under 128 registers, so 512 threads (8192 columns) still fit an SM.
constexpr int kRowElements = 16;
template <class T>
inline constexpr int kRowPacks = kRowElements / dv::kPack<T>;

template <class T>
using RowPack = dv::Pack<T, dv::kPack<T>>;

/// Loads this thread's packs of `row` (of `packs` packs); the others stay zero.
template <class T>
__device__ __forceinline__ void load_row(const T* __restrict__ row, int packs, RowPack<T> (&out)[kRowPacks<T>]) {
    for (int k = 0; k < kRowPacks<T>; ++k) {
        const int j = k * blockDim.x + threadIdx.x;
        if (j < packs) out[k] = dv::load<dv::kPack<T>>(row + static_cast<size_t>(j) * dv::kPack<T>);
    }
}

/// The row this thread works on; a last block's rows past `rows` read and write nothing
/// but join the barriers.
struct BlockRow {
    size_t row, first;  // the row, and its first element
    bool live;          // false past `rows`
    int packs;          // its 16-byte packs of T; none when not live

    template <class T>
    __device__ static BlockRow of(int rows, int cols) {
        const size_t row = static_cast<size_t>(blockIdx.x) * blockDim.y + threadIdx.y;
        const bool live = row < static_cast<size_t>(rows);
        return {row, row * cols, live, live ? cols / dv::kPack<T> : 0};
    }
};

template <class T>
__device__ __forceinline__ void rms_norm_fwd(const T* __restrict__ x, const T* __restrict__ residual,
                                             const T* __restrict__ w, T* __restrict__ sum_out, T* __restrict__ y,
                                             int rows, int cols, float eps) {
    DV_DYNAMIC_SHARED(float, scratch);
    constexpr int N = dv::kPack<T>;
    const auto [row, first, live, packs] = BlockRow::of<T>(rows, cols);
    RowPack<T> s[kRowPacks<T>] = {}, r[kRowPacks<T>] = {}, ws[kRowPacks<T>] = {};
    load_row(x + first, packs, s);
    if (residual != nullptr) load_row(residual + first, packs, r);
    load_row(w, packs, ws);
    float sum = 0.0f;  // the slots past the row hold zeros, which add nothing
    for (int k = 0; k < kRowPacks<T>; ++k) {
        const int j = k * blockDim.x + threadIdx.x;
        for (int e = 0; e < N; ++e) {
            // The row's value: x, or x + residual rounded (and stored) when fused.
            if (residual != nullptr) s[k].v[e] = dv::from_float<T>(dv::to_float(s[k].v[e]) + dv::to_float(r[k].v[e]));
            const float v = dv::to_float(s[k].v[e]);
            sum += v * v;
        }
        if (residual != nullptr && j < packs) dv::store<N>(sum_out + first + static_cast<size_t>(j) * N, s[k]);
    }
    sum = dv::block_sum(sum, scratch);
    const float rstd = rsqrtf(sum / cols + eps);
    for (int k = 0; k < kRowPacks<T>; ++k) {
        const int j = k * blockDim.x + threadIdx.x;
        RowPack<T> out;
        for (int e = 0; e < N; ++e) {
            const float n = dv::to_float(dv::from_float<T>(dv::to_float(s[k].v[e]) * rstd));
            out.v[e] = dv::from_float<T>(dv::to_float(ws[k].v[e]) * n);
        }
        if (j < packs) dv::store<N>(y + first + static_cast<size_t>(j) * N, out);
    }
}

template <class T>
__device__ __forceinline__ void rms_norm_bwd_dx(const T* __restrict__ x, const T* __restrict__ w,
                                                const T* __restrict__ dy, const T* __restrict__ d_add,
                                                T* __restrict__ dx, float* __restrict__ rstd, int rows, int cols,
                                                float eps) {
    DV_DYNAMIC_SHARED(float, scratch);
    constexpr int N = dv::kPack<T>;
    const auto [row, first, live, packs] = BlockRow::of<T>(rows, cols);
    RowPack<T> xs[kRowPacks<T>] = {}, ws[kRowPacks<T>] = {}, dys[kRowPacks<T>] = {}, adds[kRowPacks<T>] = {};
    load_row(x + first, packs, xs);
    load_row(dy + first, packs, dys);
    load_row(w, packs, ws);
    float squares = 0.0f, dot = 0.0f;  // sum x^2, and sum dy * w * x (zeros past the row)
    for (int k = 0; k < kRowPacks<T>; ++k) {
        for (int e = 0; e < N; ++e) {
            const float v = dv::to_float(xs[k].v[e]);
            squares += v * v;
            dot += dv::to_float(dys[k].v[e]) * dv::to_float(ws[k].v[e]) * v;
        }
    }
    squares = dv::block_sum(squares, scratch);
    dot = dv::block_sum(dot, scratch);
    const float r = rsqrtf(squares / cols + eps);
    const float mean = dot * r / cols;  // mean(g * n)
    if (d_add != nullptr) load_row(d_add + first, packs, adds);
    for (int k = 0; k < kRowPacks<T>; ++k) {
        const int j = k * blockDim.x + threadIdx.x;
        RowPack<T> out;
        for (int e = 0; e < N; ++e) {
            const float g = dv::to_float(dys[k].v[e]) * dv::to_float(ws[k].v[e]);
            const float n = dv::to_float(xs[k].v[e]) * r;
            const float extra = d_add == nullptr ? 0.0f : dv::to_float(adds[k].v[e]);
            out.v[e] = dv::from_float<T>(r * (g - n * mean) + extra);
        }
        if (j < packs) dv::store<N>(dx + first + static_cast<size_t>(j) * N, out);
    }
    if (threadIdx.x == 0 && live) rstd[row] = r;
}

/// The forward of any row: one block per row (blockDim.y 1), an element at a time.
template <class T>
__device__ __forceinline__ void rms_norm_fwd_scalar(const T* __restrict__ x, const T* __restrict__ residual,
                                                    const T* __restrict__ w, T* __restrict__ sum_out,
                                                    T* __restrict__ y, int cols, float eps) {
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

/// dx of any row: one block per row (blockDim.y 1), an element at a time.
template <class T>
__device__ __forceinline__ void rms_norm_bwd_dx_scalar(const T* __restrict__ x, const T* __restrict__ w,
                                                       const T* __restrict__ dy, const T* __restrict__ d_add,
                                                       T* __restrict__ dx, float* __restrict__ rstd, int cols,
                                                       float eps) {
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

/// The `N` columns from `c` of the rows `first..last`: sum dy * x * rstd per column, in row
/// order, with four rows' loads in flight at a time.
template <class T, int N>
__device__ __forceinline__ void rms_norm_bwd_dw_partial(const T* __restrict__ x, const T* __restrict__ dy,
                                                        const float* __restrict__ rstd, float* __restrict__ partial,
                                                        int rows, int cols, int rows_per_chunk) {
    constexpr int kRows = 4;
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * N;
    if (c >= cols) return;
    const int first = blockIdx.y * rows_per_chunk;
    const int last = min(rows, first + rows_per_chunk);
    dv::Pack<float, N> acc = {};
    // `count` rows from `row`, their loads first.
    auto add_rows = [&](int row, auto count) {
        constexpr int R = decltype(count)::value;
        dv::Pack<T, N> xs[R], dys[R];
        float r[R];
        for (int u = 0; u < R; ++u) {
            const size_t at = static_cast<size_t>(row + u) * cols + c;
            xs[u] = dv::load<N>(x + at);
            dys[u] = dv::load<N>(dy + at);
            r[u] = rstd[row + u];
        }
        for (int u = 0; u < R; ++u) {
            for (int e = 0; e < N; ++e) acc.v[e] += dv::to_float(dys[u].v[e]) * dv::to_float(xs[u].v[e]) * r[u];
        }
    };
    int row = first;
    for (; row + kRows <= last; row += kRows) add_rows(row, std::integral_constant<int, kRows>());
    for (; row < last; ++row) add_rows(row, std::integral_constant<int, 1>());
    dv::store<N>(partial + static_cast<size_t>(blockIdx.y) * cols + c, acc);
}

/// The `N` columns from `c`: the chunks' partial sums, in chunk order.
template <class T, int N>
__device__ __forceinline__ void rms_norm_bwd_dw_sum(const float* __restrict__ partial, T* __restrict__ dw,
                                                    int chunks, int cols) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * N;
    if (c >= cols) return;
    dv::Pack<float, N> acc = {};
    for (int k = 0; k < chunks; ++k) {
        const dv::Pack<float, N> p = dv::load<N>(partial + static_cast<size_t>(k) * cols + c);
        for (int e = 0; e < N; ++e) acc.v[e] += p.v[e];
    }
    dv::Pack<T, N> out;
    for (int e = 0; e < N; ++e) out.v[e] = dv::from_float<T>(acc.v[e]);
    dv::store<N>(dw + c, out);
}

// The kernels, by the unmangled names a launcher looks up.
#define RMS_NORM_KERNELS(S, T)                                                                                 \
    extern "C" __global__ void rms_norm_fwd_##S(const T* x, const T* residual, const T* w, T* sum, T* y,       \
                                                int rows, int cols, float eps) {                               \
        rms_norm_fwd<T>(x, residual, w, sum, y, rows, cols, eps);                                              \
    }                                                                                                          \
    extern "C" __global__ void rms_norm_fwd_scalar_##S(const T* x, const T* residual, const T* w, T* sum,      \
                                                       T* y, int cols, float eps) {                            \
        rms_norm_fwd_scalar<T>(x, residual, w, sum, y, cols, eps);                                             \
    }                                                                                                          \
    extern "C" __global__ void rms_norm_bwd_dx_##S(const T* x, const T* w, const T* dy, const T* d_add, T* dx,  \
                                                   float* rstd, int rows, int cols, float eps) {               \
        rms_norm_bwd_dx<T>(x, w, dy, d_add, dx, rstd, rows, cols, eps);                                        \
    }                                                                                                          \
    extern "C" __global__ void rms_norm_bwd_dx_scalar_##S(const T* x, const T* w, const T* dy, const T* d_add, \
                                                          T* dx, float* rstd, int cols, float eps) {           \
        rms_norm_bwd_dx_scalar<T>(x, w, dy, d_add, dx, rstd, cols, eps);                                       \
    }                                                                                                          \
    RMS_NORM_DW_KERNELS(S, T, _, dv::kPack<T>)                                                                 \
    RMS_NORM_DW_KERNELS(S, T, _scalar_, 1)
// `V` is the name's infix and `N` the columns a thread takes.
#define RMS_NORM_DW_KERNELS(S, T, V, N)                                                                        \
    extern "C" __global__ void rms_norm_bwd_dw_partial##V##S(const T* x, const T* dy, const float* rstd,       \
                                                             float* partial, int rows, int cols,               \
                                                             int rows_per_chunk) {                             \
        rms_norm_bwd_dw_partial<T, N>(x, dy, rstd, partial, rows, cols, rows_per_chunk);                       \
    }                                                                                                          \
    extern "C" __global__ void rms_norm_bwd_dw_sum##V##S(const float* partial, T* dw, int chunks, int cols) {  \
        rms_norm_bwd_dw_sum<T, N>(partial, dw, chunks, cols);                                                  \
    }
DV_FOR_EACH_TYPE(RMS_NORM_KERNELS)

DV_EMULATION_TABLE(rms_norm, DV_EMULATED(rms_norm_fwd_f32), DV_EMULATED(rms_norm_fwd_bf16),
                   DV_EMULATED(rms_norm_fwd_scalar_f32), DV_EMULATED(rms_norm_fwd_scalar_bf16),
                   DV_EMULATED(rms_norm_bwd_dx_f32), DV_EMULATED(rms_norm_bwd_dx_bf16),
                   DV_EMULATED(rms_norm_bwd_dx_scalar_f32), DV_EMULATED(rms_norm_bwd_dx_scalar_bf16),
                   DV_EMULATED(rms_norm_bwd_dw_partial_f32), DV_EMULATED(rms_norm_bwd_dw_partial_bf16),
                   DV_EMULATED(rms_norm_bwd_dw_partial_scalar_f32), DV_EMULATED(rms_norm_bwd_dw_partial_scalar_bf16),
                   DV_EMULATED(rms_norm_bwd_dw_sum_f32), DV_EMULATED(rms_norm_bwd_dw_sum_bf16),
                   DV_EMULATED(rms_norm_bwd_dw_sum_scalar_f32), DV_EMULATED(rms_norm_bwd_dw_sum_scalar_bf16))
