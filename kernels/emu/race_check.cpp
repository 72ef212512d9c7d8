// Runs every kernel once under the emulation, for ThreadSanitizer (scripts/race_check.sh).
// The emulation gives each CUDA thread a host thread and orders them only through its
// barriers, so two threads of a block touching the same shared (or global) address between
// two __syncthreads, one of them writing, is a data race TSan reports. `racy` runs a kernel
// with its barrier left out, to show that the check sees one.
#include <cstdio>
#include <cstring>
#include <vector>

#include "../adamw.cuh"
#include "../hopper.cuh"

// The kernels are plain functions under the emulation; they are launched here directly,
// with small grids (the Rust tests run them with the op's own launches).
extern "C" {
void rms_norm_fwd_f32(const float*, const float*, const float*, float*, float*, int, int, float);
void rms_norm_bwd_dx_f32(const float*, const float*, const float*, const float*, float*, float*, int, int,
                         float);
void rms_norm_bwd_dw_partial_f32(const float*, const float*, const float*, float*, int, int, int);
void rms_norm_bwd_dw_sum_f32(const float*, float*, int, int);
void swiglu_fwd_bf16(const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, size_t);
void swiglu_bwd_f32(const float*, const float*, const float*, float*, float*, size_t);
void rope_fwd_f32(const float*, const float*, const float*, float*, size_t, int, int);
void cross_entropy_rows_f32(const float*, const unsigned*, float*, float*, int);
void cross_entropy_grad_f32(const float*, const unsigned*, const float*, float*, int);
void cross_entropy_rows_bf16(const __nv_bfloat16*, const unsigned*, float*, float*, int);
void cross_entropy_grad_bf16(const __nv_bfloat16*, const unsigned*, const float*, __nv_bfloat16*, int);
void adamw_step(float*, float*, float*, const float*, __nv_bfloat16*, const AdamwChunk*, AdamwScalars);
void emu_ldmatrix_dump(const void*, uint32_t*);
void emu_mma_fragments(const uint32_t*, const uint32_t*, const float*, float*);
void emu_gemm_16x8(const void*, const void*, float*, int);
void wgmma_dump_ss(const uint32_t*, int, uint64_t, uint64_t, int, int, int, uint32_t, uint32_t, int, const float*,
                   float*);
void wgmma_dump_rs(const uint32_t*, int, const uint32_t*, uint64_t, int, int, int, const float*, float*);
struct Tile {
    int first, q_start, q_end, k_start, k_end;
};
void flash_attention_fwd_d64(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, __nv_bfloat16*, float*,
                             const Tile*, int, int, int, float);
void flash_attention_delta(const __nv_bfloat16*, const __nv_bfloat16*, float*, int, int, int);
void flash_attention_dq_d64(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                            const float*, const float*, __nv_bfloat16*, const Tile*, int, int, int, float, float);
void flash_attention_dkdv_d64(const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                              const float*, const float*, __nv_bfloat16*, __nv_bfloat16*, const Tile*, int, int, int,
                              float, float);
using Map = dv::sm90::TensorMap;
void flash_attention_fwd_sm90_d64(Map, Map, Map, __nv_bfloat16*, float*, const Tile*, int, int, int, float);
void flash_attention_bwd_sm90_d64(Map, Map, Map, Map, const float*, const float*, float*, int*, __nv_bfloat16*,
                                  __nv_bfloat16*, const Tile*, int, int, int, float, float);
}

// The emulation's tensor map of a [tokens, heads, 64] bf16 tensor in boxes of `rows` rows of
// one head, 128-byte swizzled (what `TensorMapSpec::emulated_words` writes).
static dv::sm90::TensorMap rows_map(const void* base, uint64_t tokens, uint64_t heads, uint32_t rows) {
    emu::TensorMapFields f{};
    f.magic = emu::kTensorMapMagic;
    f.address = reinterpret_cast<uint64_t>(base);
    f.rank = 3;
    f.element_bytes = 2;
    f.swizzle_bytes = 128;
    const uint64_t dims[5] = {64, heads, tokens, 1, 1}, strides[4] = {128, heads * 128, 0, 0};
    const uint32_t box[5] = {64, 1, rows, 1, 1};
    std::memcpy(f.dims, dims, sizeof dims);
    std::memcpy(f.strides, strides, sizeof strides);
    std::memcpy(f.box, box, sizeof box);
    dv::sm90::TensorMap map{};
    std::memcpy(map.words, &f, sizeof f);
    return map;
}

// Sums a block's values through shared memory, with the barrier between the writes and
// thread 0's reads left out on purpose.
__global__ void racy_sum(const float* x, float* out) {
    DV_DYNAMIC_SHARED(float, values);
    values[threadIdx.x] = x[threadIdx.x];
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (unsigned i = 0; i < blockDim.x; ++i) total += values[i];
        *out = total;
    }
}

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "racy") == 0) {
        std::vector<float> x(64, 1.0f);
        float out = 0.0f;
        emu::launch(dim3(1), dim3(64), 64 * sizeof(float), racy_sum, x.data(), &out);
        std::printf("racy sum %g\n", out);
        return 0;
    }
    const int rows = 3, cols = 100, n = rows * cols;
    std::vector<float> a(4096, 0.5f), b(4096, 0.25f), c(4096, -0.5f), d(4096), e(4096), rstd(rows), partial(2 * cols);
    std::vector<__nv_bfloat16> bf(4096, __nv_bfloat16{0x3f00}), bf_out(4096);
    // Two rows a block (the second block's second row past the last), as the vector row
    // kernels run.
    emu::launch(dim3(2), dim3(32, 2), 32 * sizeof(float), rms_norm_fwd_f32, a.data(), c.data(), b.data(), e.data(),
                d.data(), rows, cols, 1e-6f);
    emu::launch(dim3(2), dim3(32, 2), 32 * sizeof(float), rms_norm_bwd_dx_f32, a.data(), b.data(), c.data(),
                c.data(), d.data(), rstd.data(), rows, cols, 1e-6f);
    emu::launch(dim3(2, 2), dim3(64), 0, rms_norm_bwd_dw_partial_f32, a.data(), c.data(), rstd.data(), partial.data(),
                rows, cols, 2);
    emu::launch(dim3(2), dim3(64), 0, rms_norm_bwd_dw_sum_f32, partial.data(), e.data(), 2, cols);
    emu::launch(dim3(2), dim3(64), 0, swiglu_fwd_bf16, bf.data(), bf.data(), bf_out.data(), size_t(n));
    emu::launch(dim3(2), dim3(64), 0, swiglu_bwd_f32, a.data(), b.data(), c.data(), d.data(), e.data(), size_t(n));
    emu::launch(dim3(1), dim3(32), 0, rope_fwd_f32, a.data(), b.data(), c.data(), d.data(), size_t(5), 2, 16);
    std::vector<unsigned> targets = {0, 99, 50};
    std::vector<float> lse(rows);
    emu::launch(dim3(rows), dim3(64), 64 * sizeof(float), cross_entropy_rows_f32, a.data(), targets.data(), e.data(),
                lse.data(), cols);
    emu::launch(dim3(rows, 2), dim3(64), 0, cross_entropy_grad_f32, a.data(), targets.data(),
                static_cast<const float*>(lse.data()), d.data(), cols);
    emu::launch(dim3(rows), dim3(64), 64 * sizeof(float), cross_entropy_rows_bf16, bf.data(), targets.data(),
                e.data(), lse.data(), cols);
    emu::launch(dim3(rows, 2), dim3(64), 0, cross_entropy_grad_bf16, bf.data(), targets.data(),
                static_cast<const float*>(lse.data()), bf_out.data(), cols);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    std::vector<AdamwChunk> chunks = {{0, 150, 1}, {150, 150, 0}};
    AdamwScalars scalars{0.9f, 0.95f, 1e-8f, 1e-3f, 0.3f, 1e-4f};
    emu::launch(dim3(2), dim3(64), 0, adamw_step, a.data(), m.data(), v.data(), b.data(), bf_out.data(),
                static_cast<const AdamwChunk*>(chunks.data()), scalars);
    std::vector<uint32_t> words(32 * 16);
    emu_ldmatrix_dump(bf.data(), words.data());
    std::vector<uint32_t> frag_a(32 * 4, 0x3f803f80u), frag_b(32 * 2, 0x3f803f80u);
    emu_mma_fragments(frag_a.data(), frag_b.data(), c.data(), d.data());
    emu_gemm_16x8(bf.data(), bf.data(), d.data(), 32);
    // wgmma: one warpgroup, K-major A at 0 and B at 8 KB with 128-byte swizzle, a chain of two
    // k steps, then A from registers.
    {
        std::vector<uint32_t> image(16384 / 4, 0x3f803f80u), regs(128 * 4, 0x3f803f80u);
        const uint64_t a = (1ull << 16) | (64ull << 32) | (1ull << 62), b = a | (8192 >> 4);
        emu::launch(dim3(1), dim3(128), 16384 + 1024, wgmma_dump_ss, static_cast<const uint32_t*>(image.data()),
                    16384, a, b, 64, 0, 2, 32u, 32u, 1, static_cast<const float*>(c.data()), d.data());
        emu::launch(dim3(1), dim3(128), 16384 + 1024, wgmma_dump_rs, static_cast<const uint32_t*>(image.data()),
                    16384, static_cast<const uint32_t*>(regs.data()), b, 32, 1, 0, static_cast<const float*>(c.data()),
                    d.data());
    }
    // Flash attention: 70 queries (one query tile of 128) against 100
    // keys (two key tiles, the second partial, the diagonal 30 keys in), two query heads
    // sharing one kv head, head_dim 64.
    {
        const int tokens = 70, keys = 100, dim = 64;
        using B = __nv_bfloat16;
        std::vector<B> q(tokens * 2 * dim, B{0x3c00}), kv(keys * dim, B{0x3c00}), o(tokens * 2 * dim);
        std::vector<B> g(tokens * 2 * dim, B{0x3c00}), dq(tokens * 2 * dim), dk(keys * dim), dvv(keys * dim);
        std::vector<float> lse(2 * tokens), delta(2 * tokens);
        const Tile query_tiles[] = {{0, 0, 70, 0, 100}};
        const Tile key_tiles[] = {{0, 0, 70, 0, 100}, {64, 0, 70, 0, 100}};
        const size_t row = dim * 2;
        emu::launch(dim3(1, 2), dim3(128), (128 + 2 * 64) * row, flash_attention_fwd_d64, q.data(), kv.data(),
                    kv.data(), o.data(), lse.data(), query_tiles, tokens, 2, 1, 0.18f);
        emu::launch(dim3(4), dim3(256), 0, flash_attention_delta, static_cast<const B*>(o.data()),
                    static_cast<const B*>(g.data()), delta.data(), tokens, 2, dim);
        emu::launch(dim3(1, 2), dim3(128), (2 * 128 + 4 * 64) * row, flash_attention_dq_d64, q.data(), kv.data(), kv.data(),
                    static_cast<const B*>(g.data()), static_cast<const float*>(lse.data()),
                    static_cast<const float*>(delta.data()), dq.data(), query_tiles, tokens, 2, 1, 0.18f, 0.125f);
        emu::launch(dim3(2, 1), dim3(128), (2 * 64 + 4 * 32) * row + 4 * 32 * 4, flash_attention_dkdv_d64, q.data(),
                    kv.data(), kv.data(), static_cast<const B*>(g.data()), static_cast<const float*>(lse.data()),
                    static_cast<const float*>(delta.data()), dk.data(), dvv.data(), key_tiles, tokens, 2, 1, 0.18f,
                    0.125f);
        // Hopper's: the producer, both consumers, their named barriers and mbarriers; the
        // backward's one key tile of 128 adds its share of dQ in its turn.
        const Tile hopper_keys[] = {{0, 0, 70, 0, 100}};
        std::vector<float> dq_sum(tokens * 2 * dim, 0.0f);
        std::vector<int> turns(2 * tokens + 1, 0);  // and the work counter
        emu::launch(dim3(1, 2), dim3(384), 114768, flash_attention_fwd_sm90_d64, rows_map(q.data(), tokens, 2, 128),
                    rows_map(kv.data(), keys, 1, 128), rows_map(kv.data(), keys, 1, 128), o.data(), lse.data(),
                    query_tiles, tokens, 2, 1, 0.18f);
        emu::launch(dim3(1, 1), dim3(384), 82984, flash_attention_bwd_sm90_d64, rows_map(q.data(), tokens, 2, 64),
                    rows_map(kv.data(), keys, 1, 128), rows_map(kv.data(), keys, 1, 128),
                    rows_map(g.data(), tokens, 2, 64), static_cast<const float*>(lse.data()),
                    static_cast<const float*>(delta.data()), dq_sum.data(), turns.data(), dk.data(), dvv.data(),
                    hopper_keys, tokens, 2, 1, 0.18f, 0.125f);
    }
    std::printf("every kernel ran\n");
    return 0;
}
