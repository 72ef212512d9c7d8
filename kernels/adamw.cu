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
#include "adamw.cuh"

extern "C" __global__ void adamw_step(float* __restrict__ master, float* __restrict__ m, float* __restrict__ v,
                                      const float* __restrict__ grad, __nv_bfloat16* __restrict__ compute,
                                      const AdamwChunk* __restrict__ chunks, AdamwScalars s) {
    const AdamwChunk chunk = chunks[blockIdx.x];
    const float decay = chunk.decay ? s.decay : 0.0f;
    const float one_minus_b1 = __fadd_rn(1.0f, -s.beta1), one_minus_b2 = __fadd_rn(1.0f, -s.beta2);
    for (unsigned int i = threadIdx.x; i < chunk.len; i += blockDim.x) {
        const size_t at = chunk.offset + i;
        const float g = grad[at];
        const float mi = __fadd_rn(__fmul_rn(s.beta1, m[at]), __fmul_rn(one_minus_b1, g));
        const float vi = __fadd_rn(__fmul_rn(s.beta2, v[at]), __fmul_rn(__fmul_rn(one_minus_b2, g), g));
        float w = master[at];
        w = __fadd_rn(w, -__fmul_rn(decay, w));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bias2_sqrt), s.eps);
        w = __fadd_rn(w, -__fdiv_rn(__fmul_rn(s.step_size, mi), denom));
        m[at] = mi;
        v[at] = vi;
        master[at] = w;
        if (compute != nullptr) compute[at] = __float2bfloat16(w);
    }
}

DV_EMULATION_TABLE(adamw, DV_EMULATED(adamw_step))
