// Cross-entropy over rows of logits (f32 or bf16, the arithmetic in f32), the fused middle
// of the chunked linear + cross-entropy (the matmuls around it run on cuBLAS, as
// Liger-Kernel's FusedLinearCrossEntropy does). Two kernels, each one pass over the logits:
//
// - `cross_entropy_rows_<T>`: one block per row. Each thread keeps a running (max, sum of
//   exp(x - max)) over its columns, the block merges the pairs in a fixed tree, and the
//   row gets its loss lse(x) - x[target] (f32) and its lse (f32, for the gradient). The
//   thread that loads x[target] in the pass keeps it, so the target is not read again.
// - `cross_entropy_grad_<T>`: softmax(x) - one_hot(target) = exp(x - lse) - one_hot, in
//   the logits' dtype. Elementwise once lse is known, so a row is split over blocks
//   (blockIdx.y), each thread taking UNROLL packs: the grid fills the GPU even for a
//   chunk of few rows, and no merge is needed (the result does not depend on the split).
//
// The logits are read twice in all (the gradient needs lse, which needs the whole row; a
// row of Qwen's 151,936 f32 logits is 594 KB, more than an SM's shared memory) and the
// gradient written once. Both kernels are memory bound: every load is 16 bytes
// (dv::Pack, LDG.E.128) and each thread has UNROLL of them in flight, 64 bytes a thread,
// 2 KB a warp. The static performance model (docs/kernels.md) takes an H100 to need about
// 14 KB in flight per SM under load (Little's law), 7 resident warps here; the head's
// chunk of 441 rows puts 3 to 4 row blocks (24 to 32 warps) on each SM, and the
// gradient's grid is 19 to 37 times larger.
//
// Rows start at row * vocab, so a row is only element-aligned: its first elements up to
// the first 16-byte boundary (the head, fewer than a pack) and the elements after its last
// whole pack (the tail) are loaded one at a time, by one thread each. The gradient stores
// packs where d_logits has the logits' alignment (the head's do: the logits are a fresh
// product, the gradient a fresh allocation) and one element at a time where it does not.
//
// Targets are valid vocabulary ids: rows whose label is -100 never reach these kernels;
// one outside the vocabulary (the model checks labels first) gives a NaN loss rather than
// a read past the row. Logits of -inf (masked vocabulary entries) get probability 0; a row
// of nothing but -inf has no distribution and gives a NaN loss.
#include "common.cuh"

namespace {
/// 16-byte loads each thread has in flight.
constexpr int UNROLL = 4;

struct MaxSum {
    float max, sum;
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
    const float m = fmaxf(a.max, b.max);
    if (m == -INFINITY) return {m, 0.0f};
    return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

/// Folds `K` values into the running pair: rescaled once to the new maximum, then one
/// exponential per value (no branch per value, unlike a per-element online update).
template <int K>
__device__ __forceinline__ void accumulate(MaxSum& own, const float* v) {
    float top = own.max;
    #pragma unroll
    for (int i = 0; i < K; ++i) top = fmaxf(top, v[i]);
    // Nothing but -inf so far: exp(-inf - -inf) would be a NaN.
    if (top == -INFINITY) return;
    float sum = own.sum * expf(own.max - top);
    #pragma unroll
    for (int i = 0; i < K; ++i) sum += expf(v[i] - top);
    own = {top, sum};
}

/// The block's merged (max, sum); `scratch` holds 64 floats of shared memory.
__device__ __forceinline__ MaxSum block_merge(MaxSum v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (int offset = 16; offset > 0; offset >>= 1) {
        MaxSum other{__shfl_xor_sync(0xffffffffu, v.max, offset), __shfl_xor_sync(0xffffffffu, v.sum, offset)};
        v = merge(v, other);
    }
    if (lane == 0) {
        scratch[warp] = v.max;
        scratch[32 + warp] = v.sum;
    }
    __syncthreads();
    MaxSum total{-INFINITY, 0.0f};
    if (lane < warps) total = MaxSum{scratch[lane], scratch[32 + lane]};
    for (int offset = 16; offset > 0; offset >>= 1) {
        MaxSum other{__shfl_xor_sync(0xffffffffu, total.max, offset),
                     __shfl_xor_sync(0xffffffffu, total.sum, offset)};
        total = merge(total, other);
    }
    __syncthreads();
    return total;
}

/// A row's elements: [0, head) before its first 16-byte boundary and [end, vocab) after
/// its last whole pack go one at a time; `packs` packs lie between.
struct RowSplit {
    int head, packs, end;
};

template <class T>
__device__ __forceinline__ RowSplit split_row(const T* row, int vocab) {
    constexpr int N = dv::kPack<T>;
    const int past = static_cast<int>((reinterpret_cast<uintptr_t>(row) / sizeof(T)) % N);
    const int head = min(vocab, (N - past) % N);
    const int packs = (vocab - head) / N;
    return {head, packs, head + packs * N};
}

/// Keeps `v[target - first]` when the target is among the `K` values from column `first`.
template <int K>
__device__ __forceinline__ void keep_target(unsigned target, int first, const float* v, float& kept, bool& owner) {
    const unsigned at = target - static_cast<unsigned>(first);
    if (at < K) {
        owner = true;
        #pragma unroll
        for (int i = 0; i < K; ++i) {
            if (at == static_cast<unsigned>(i)) kept = v[i];
        }
    }
}

template <class T>
__device__ __forceinline__ void loss_rows(const T* __restrict__ logits, const unsigned* __restrict__ targets,
                                          float* __restrict__ loss, float* __restrict__ lse_out, int vocab) {
    constexpr int N = dv::kPack<T>;
    DV_DYNAMIC_SHARED(float, scratch);
    const size_t row = blockIdx.x;
    const T* x = logits + row * vocab;
    const unsigned target = targets[row];
    const int t = threadIdx.x, stride = blockDim.x;
    const RowSplit s = split_row(x, vocab);
    MaxSum own{-INFINITY, 0.0f};
    // x[target], kept by the one thread that loads it (if the target is a column).
    float kept = 0.0f;
    bool owner = false;
    const auto single = [&](int c) {
        const float v = dv::to_float(x[c]);
        accumulate<1>(own, &v);
        keep_target<1>(target, c, &v, kept, owner);
    };
    if (t < s.head) single(t);
    if (s.end + t < vocab) single(s.end + t);
    const T* body = x + s.head;
    int j = t;
    for (; j + (UNROLL - 1) * stride < s.packs; j += UNROLL * stride) {
        dv::Pack<T, N> p[UNROLL];
        #pragma unroll
        for (int u = 0; u < UNROLL; ++u) p[u] = dv::load<N>(body + static_cast<size_t>(j + u * stride) * N);
        float v[UNROLL * N];
        #pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            dv::to_floats(p[u], v + u * N);
            keep_target<N>(target, s.head + (j + u * stride) * N, v + u * N, kept, owner);
        }
        accumulate<UNROLL * N>(own, v);
    }
    for (; j < s.packs; j += stride) {
        float v[N];
        dv::to_floats(dv::load<N>(body + static_cast<size_t>(j) * N), v);
        keep_target<N>(target, s.head + j * N, v, kept, owner);
        accumulate<N>(own, v);
    }
    const MaxSum total = block_merge(own, scratch);
    const float lse = total.max + logf(total.sum);
    if (owner) loss[row] = lse - kept;
    if (t == 0) {
        if (target >= static_cast<unsigned>(vocab)) loss[row] = NAN;
        lse_out[row] = lse;
    }
}

__device__ __forceinline__ float gradient(float x, int c, unsigned target, float lse) {
    return expf(x - lse) - (static_cast<unsigned>(c) == target ? 1.0f : 0.0f);
}

template <class T>
__device__ __forceinline__ void grad_rows(const T* __restrict__ logits, const unsigned* __restrict__ targets,
                                          const float* __restrict__ lse, T* __restrict__ d_logits, int vocab) {
    constexpr int N = dv::kPack<T>;
    const size_t row = blockIdx.x;
    const T* x = logits + row * vocab;
    T* d = d_logits + row * vocab;
    const unsigned target = targets[row];
    const float shift = lse[row];
    const int t = threadIdx.x, stride = blockDim.x;
    const RowSplit s = split_row(x, vocab);
    const auto single = [&](int c) { d[c] = dv::from_float<T>(gradient(dv::to_float(x[c]), c, target, shift)); };
    if (split_row(d, vocab).head != s.head) {
        // Packs of x and of d do not line up: this block's columns one at a time.
        const int first = blockIdx.y * stride * UNROLL * N, last = min(vocab, first + stride * UNROLL * N);
        for (int c = first + t; c < last; c += stride) single(c);
        return;
    }
    if (blockIdx.y == 0) {
        if (t < s.head) single(t);
        if (s.end + t < vocab) single(s.end + t);
    }
    const T* in = x + s.head;
    T* out = d + s.head;
    const int j = blockIdx.y * stride * UNROLL + t;
    dv::Pack<T, N> p[UNROLL];
    #pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        if (j + u * stride < s.packs) p[u] = dv::load<N>(in + static_cast<size_t>(j + u * stride) * N);
    }
    #pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const int k = j + u * stride;
        if (k < s.packs) {
            float v[N];
            dv::to_floats(p[u], v);
            #pragma unroll
            for (int i = 0; i < N; ++i) v[i] = gradient(v[i], s.head + k * N + i, target, shift);
            dv::store<N>(out + static_cast<size_t>(k) * N, dv::from_floats<T, N>(v));
        }
    }
}
}  // namespace

#define DV_CROSS_ENTROPY(suffix, T)                                                                                  \
    extern "C" __global__ void cross_entropy_rows_##suffix(const T* __restrict__ logits,                             \
                                                           const unsigned* __restrict__ targets,                     \
                                                           float* __restrict__ loss, float* __restrict__ lse,        \
                                                           int vocab) {                                              \
        loss_rows(logits, targets, loss, lse, vocab);                                                                \
    }                                                                                                                \
    extern "C" __global__ void cross_entropy_grad_##suffix(const T* __restrict__ logits,                             \
                                                           const unsigned* __restrict__ targets,                     \
                                                           const float* __restrict__ lse, T* __restrict__ d_logits, \
                                                           int vocab) {                                              \
        grad_rows(logits, targets, lse, d_logits, vocab);                                                            \
    }
DV_FOR_EACH_TYPE(DV_CROSS_ENTROPY)

DV_EMULATION_TABLE(cross_entropy, DV_EMULATED(cross_entropy_rows_f32), DV_EMULATED(cross_entropy_rows_bf16),
                   DV_EMULATED(cross_entropy_grad_f32), DV_EMULATED(cross_entropy_grad_bf16))
