// Multi-tensor AdamW over flat fp32 shards: master weights, first and second moments and
// the gradient share one flat layout, and a table of chunks (each inside one tensor, with
// that tensor's weight-decay flag) gives each block its piece, as Apex's multi-tensor
// apply does. One launch updates every tensor of a shard and, when `compute` is not null,
// writes the bf16 copy of the new weights that the forward uses.
//
// The arithmetic is the CPU optimizer's (crates/train/src/optimizer.rs), operation for
// operation, with the products and sums rounded separately (no fused multiply-add), so the
// GPU and the CPU take bit-identical steps:
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g;  w -= decay w;
//   w -= step_size m / (sqrt(v) / bias2_sqrt + eps)
// with step_size = lr / (1 - b1^t), bias2_sqrt = sqrt(1 - b2^t), decay = lr * wd or 0.
//
// Launches: a block per chunk. `adamw_step` takes 4 elements of each array at a time (16
// bytes of the f32 arrays, 8 of the bf16 copy), so it needs master, m, v and grad 16-byte
// aligned and compute 8-byte aligned: a chunk's elements before its first multiple of 4
// and after its last go one to a thread. `adamw_step_scalar`, the same code an element at a
// time, takes any alignment (a `[3, n]` state with n not a multiple of 4).
#include "adamw.cuh"

namespace {
/// Updates the `N` elements at `at` of every array.
template <int N>
__device__ __forceinline__ void update(float* __restrict__ master, float* __restrict__ m, float* __restrict__ v,
                                       const float* __restrict__ grad, __nv_bfloat16* __restrict__ compute,
                                       size_t at, float decay, const AdamwScalars& s) {
    const float one_minus_b1 = __fadd_rn(1.0f, -s.beta1), one_minus_b2 = __fadd_rn(1.0f, -s.beta2);
    const dv::Pack<float, N> gs = dv::load<N>(grad + at), ms = dv::load<N>(m + at), vs = dv::load<N>(v + at);
    dv::Pack<float, N> ws = dv::load<N>(master + at), m_out, v_out;
    dv::Pack<__nv_bfloat16, N> copy;
    for (int k = 0; k < N; ++k) {
        const float g = gs.v[k];
        const float mi = __fadd_rn(__fmul_rn(s.beta1, ms.v[k]), __fmul_rn(one_minus_b1, g));
        const float vi = __fadd_rn(__fmul_rn(s.beta2, vs.v[k]), __fmul_rn(__fmul_rn(one_minus_b2, g), g));
        float w = ws.v[k];
        w = __fadd_rn(w, -__fmul_rn(decay, w));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bias2_sqrt), s.eps);
        w = __fadd_rn(w, -__fdiv_rn(__fmul_rn(s.step_size, mi), denom));
        m_out.v[k] = mi;
        v_out.v[k] = vi;
        ws.v[k] = w;
        copy.v[k] = __float2bfloat16(w);
    }
    dv::store<N>(m + at, m_out);
    dv::store<N>(v + at, v_out);
    dv::store<N>(master + at, ws);
    if (compute != nullptr) dv::store<N>(compute + at, copy);
}

/// The block's chunk: its elements up to the first multiple of `N`, its packs of `N`, and
/// the elements past the last pack (with `N` = 1, only packs).
template <int N>
__device__ __forceinline__ void adamw(float* master, float* m, float* v, const float* grad,
                                      __nv_bfloat16* compute, const AdamwChunk* chunks, const AdamwScalars& s) {
    const AdamwChunk chunk = chunks[blockIdx.x];
    const float decay = chunk.decay ? s.decay : 0.0f;
    const unsigned int head = min(chunk.len, static_cast<unsigned int>((N - chunk.offset % N) % N));
    const unsigned int packs = (chunk.len - head) / N;
    const size_t body = chunk.offset + head, tail = body + static_cast<size_t>(packs) * N;
    if (threadIdx.x < head) update<1>(master, m, v, grad, compute, chunk.offset + threadIdx.x, decay, s);
    for (unsigned int p = threadIdx.x; p < packs; p += blockDim.x) {
        update<N>(master, m, v, grad, compute, body + static_cast<size_t>(p) * N, decay, s);
    }
    if (threadIdx.x < chunk.offset + chunk.len - tail) {
        update<1>(master, m, v, grad, compute, tail + threadIdx.x, decay, s);
    }
}
}  // namespace

extern "C" __global__ void adamw_step(float* master, float* m, float* v, const float* grad,
                                      __nv_bfloat16* compute, const AdamwChunk* chunks, AdamwScalars s) {
    adamw<4>(master, m, v, grad, compute, chunks, s);
}

extern "C" __global__ void adamw_step_scalar(float* master, float* m, float* v, const float* grad,
                                             __nv_bfloat16* compute, const AdamwChunk* chunks, AdamwScalars s) {
    adamw<1>(master, m, v, grad, compute, chunks, s);
}

DV_EMULATION_TABLE(adamw, DV_EMULATED(adamw_step), DV_EMULATED(adamw_step_scalar))
