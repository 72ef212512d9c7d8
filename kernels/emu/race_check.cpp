// Runs every kernel once under the emulation, for ThreadSanitizer (scripts/race_check.sh).
// The emulation gives each CUDA thread a host thread and orders them only through its
// barriers, so two threads of a block touching the same shared (or global) address between
// two __syncthreads, one of them writing, is a data race TSan reports. `racy` runs a kernel
// with its barrier left out, to show that the check sees one.
#include <cstdio>
#include <cstring>
#include <vector>

#include "../adamw.cuh"

extern "C" {
void emu_rms_norm_fwd(int, const void*, const void*, const void*, void*, void*, int, int, float, int);
void emu_rms_norm_bwd(int, const void*, const void*, const void*, const void*, void*, void*, int, int, float, int, int);
void emu_swiglu_fwd(int, const void*, const void*, void*, size_t, int, int);
void emu_swiglu_bwd(int, const void*, const void*, const void*, void*, void*, size_t, int, int);
void emu_rope(int, int, const void*, const float*, const float*, void*, size_t, int, int, int, int);
void emu_cross_entropy_rows(const float*, const unsigned*, float*, float*, int, int, int);
void emu_adamw_step(float*, float*, float*, const float*, void*, const AdamwChunk*, int, const AdamwScalars*, int);
void emu_ldmatrix_dump(const void*, uint32_t*);
void emu_mma_fragments(const uint32_t*, const uint32_t*, const float*, float*);
void emu_gemm_16x8(const void*, const void*, float*, int);
void emu_flash_attention_fwd(const void*, const void*, const void*, void*, float*, const void*, int, int, int, int, int,
                             float);
void emu_flash_attention_bwd(const void*, const void*, const void*, const void*, const void*, const float*, void*,
                             void*, void*, const void*, int, const void*, int, int, int, int, int, float);
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
    std::vector<float> a(4096, 0.5f), b(4096, 0.25f), c(4096, -0.5f), d(4096), e(4096);
    std::vector<uint16_t> bf(4096, 0x3f00);
    emu_rms_norm_fwd(0, a.data(), c.data(), b.data(), e.data(), d.data(), rows, cols, 1e-6f, 64);
    emu_rms_norm_bwd(0, a.data(), b.data(), c.data(), c.data(), d.data(), e.data(), rows, cols, 1e-6f, 64, 2);
    emu_swiglu_fwd(1, bf.data(), bf.data(), d.data(), n, 2, 64);
    emu_swiglu_bwd(0, a.data(), b.data(), c.data(), d.data(), e.data(), n, 2, 64);
    emu_rope(0, 0, a.data(), b.data(), c.data(), d.data(), 5, 2, 16, 1, 32);
    std::vector<unsigned> targets = {0, 99, 50};
    emu_cross_entropy_rows(a.data(), targets.data(), d.data(), e.data(), rows, cols, 64);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    std::vector<AdamwChunk> chunks = {{0, 150, 1}, {150, 150, 0}};
    AdamwScalars scalars{0.9f, 0.95f, 1e-8f, 1e-3f, 0.3f, 1e-4f};
    emu_adamw_step(a.data(), m.data(), v.data(), b.data(), bf.data(), chunks.data(), 2, &scalars, 64);
    std::vector<uint32_t> words(32 * 16);
    emu_ldmatrix_dump(bf.data(), words.data());
    std::vector<uint32_t> frag_a(32 * 4, 0x3f803f80u), frag_b(32 * 2, 0x3f803f80u);
    emu_mma_fragments(frag_a.data(), frag_b.data(), c.data(), d.data());
    emu_gemm_16x8(bf.data(), bf.data(), d.data(), 32);
    // Flash attention: one document of 70 tokens (two query tiles, a partial key tile)
    // over two query heads sharing one kv head, head_dim 64.
    {
        const int tokens = 70, d = 64;
        std::vector<uint16_t> q(tokens * 2 * d, 0x3c00), kv(tokens * d, 0x3c00), o(tokens * 2 * d), g(tokens * 2 * d, 0x3c00);
        std::vector<uint16_t> dq(tokens * 2 * d), dk(tokens * d), dvv(tokens * d);
        std::vector<float> lse(2 * tokens);
        const int query_tiles[] = {64, 0, 70, 0, 0, 70};
        const int key_tiles[] = {0, 0, 70, 64, 0, 70};
        emu_flash_attention_fwd(q.data(), kv.data(), kv.data(), o.data(), lse.data(), query_tiles, 2, tokens, 2, 1, d,
                                0.125f);
        emu_flash_attention_bwd(q.data(), kv.data(), kv.data(), o.data(), g.data(), lse.data(), dq.data(), dk.data(),
                                dvv.data(), query_tiles, 2, key_tiles, 2, tokens, 2, 1, d, 0.125f);
    }
    std::printf("every kernel ran\n");
    return 0;
}
