// Cross-entropy over rows of f32 logits, the fused middle of the chunked linear +
// cross-entropy (the two matmuls around it run on cuBLAS, as Liger-Kernel's
// FusedLinearCrossEntropy does): per row, the loss lse(x) - x[target] and, when `d_logits`
// is not null, the gradient softmax(x) - one_hot(target), so the backward needs no second
// pass over the vocabulary.
//
// One block per row. Pass 1: each thread keeps a running (max, sum of exp(x - max)) over
// its columns; the block merges the pairs. Pass 2: writes the gradient. Targets are valid
// vocabulary ids: rows whose label is -100 never reach this kernel. Logits of -inf (masked
// vocabulary entries) get probability 0; a row of nothing but -inf has no distribution and
// gives a NaN loss.
#include "common.cuh"

namespace {
struct MaxSum {
    float max, sum;
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
    const float m = fmaxf(a.max, b.max);
    if (m == -INFINITY) return {m, 0.0f};
    return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
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
}  // namespace

extern "C" __global__ void cross_entropy_rows(const float* __restrict__ logits, const unsigned int* __restrict__ targets,
                                              float* __restrict__ d_logits, float* __restrict__ loss, int vocab) {
    DV_DYNAMIC_SHARED(float, scratch);
    const size_t row = blockIdx.x;
    const float* x = logits + row * vocab;
    MaxSum own{-INFINITY, 0.0f};
    for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
        const float v = x[c];
        // A -inf logit adds nothing, and would make exp(-inf - -inf) a NaN while this
        // thread has seen nothing larger.
        if (v == -INFINITY) continue;
        if (v > own.max) {
            own.sum = own.sum * expf(own.max - v) + 1.0f;
            own.max = v;
        } else {
            own.sum += expf(v - own.max);
        }
    }
    const MaxSum total = block_merge(own, scratch);
    const float lse = total.max + logf(total.sum);
    // A target outside the vocabulary (the model checks labels first) gives a NaN loss
    // rather than a read past the row.
    const unsigned int target = targets[row];
    if (threadIdx.x == 0) loss[row] = target < static_cast<unsigned int>(vocab) ? lse - x[target] : NAN;
    if (d_logits != nullptr) {
        float* d = d_logits + row * vocab;
        for (int c = threadIdx.x; c < vocab; c += blockDim.x) {
            d[c] = expf(x[c] - lse) - (static_cast<unsigned int>(c) == target ? 1.0f : 0.0f);
        }
    }
}

DV_EMULATION_TABLE(cross_entropy, DV_EMULATED(cross_entropy_rows))
