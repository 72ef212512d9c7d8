// Self-test kernels for the tensor-core wrappers of mma.cuh: they expose the fragments so
// that tests can check every lane's registers against the PTX ISA's layout tables (under
// the emulation here; the same kernels run on a GPU), and a small GEMM that uses cp.async,
// ldmatrix and mma together. One warp each.
#include "mma.cuh"

// Copies `bytes` (a multiple of 16, 16-byte aligned) into shared memory with cp.async,
// 16 bytes a lane per round, and waits for it.
__device__ __forceinline__ void stage(void* shared, const void* global, int bytes) {
    for (int at = threadIdx.x * 16; at < bytes; at += blockDim.x * 16) {
        dv::cp_async_16(static_cast<unsigned char*>(shared) + at, static_cast<const unsigned char*>(global) + at);
    }
    dv::cp_async_commit();
    dv::cp_async_wait<0>();
    __syncthreads();
}

// src: four 8x8 bf16 matrices, row-major, one after another. out[lane * 16 + k]: k 0-3
// ldmatrix x4, 4-7 x4.trans, 8-9 x2, 10-11 x2.trans, 12 x1, 13 x1.trans, 14-15 unused (0).
extern "C" __global__ void ldmatrix_dump(const __nv_bfloat16* src, uint32_t* out) {
    DV_DYNAMIC_SHARED(__nv_bfloat16, tiles);
    stage(tiles, src, 4 * 64 * 2);
    const int lane = threadIdx.x % 32;
    const __nv_bfloat16* row = tiles + (lane / 8) * 64 + (lane % 8) * 8;
    uint32_t* mine = out + lane * 16;
    uint32_t r[4];
    dv::ldmatrix<4, false>(r, row);
    for (int j = 0; j < 4; ++j) mine[j] = r[j];
    dv::ldmatrix<4, true>(r, row);
    for (int j = 0; j < 4; ++j) mine[4 + j] = r[j];
    dv::ldmatrix<2, false>(r, row);
    mine[8] = r[0];
    mine[9] = r[1];
    dv::ldmatrix<2, true>(r, row);
    mine[10] = r[0];
    mine[11] = r[1];
    dv::ldmatrix<1, false>(r, row);
    mine[12] = r[0];
    dv::ldmatrix<1, true>(r, row);
    mine[13] = r[0];
    mine[14] = 0;
    mine[15] = 0;
}

// Per-lane fragments in, per-lane result out: a[lane * 4 + j], b[lane * 2 + j],
// c and d[lane * 4 + i].
extern "C" __global__ void mma_fragments(const uint32_t* a, const uint32_t* b, const float* c, float* d) {
    const int lane = threadIdx.x % 32;
    float out[4];
    dv::mma_bf16_16x8x16(out, a + lane * 4, b + lane * 2, c + lane * 4);
    for (int i = 0; i < 4; ++i) d[lane * 4 + i] = out[i];
}

// D (16x8, f32, row-major) = A (16 x k, bf16, row-major) B, with B given as its transpose
// bt (8 x k, row-major, i.e. B column-major); k a multiple of 16.
extern "C" __global__ void gemm_16x8(const __nv_bfloat16* a, const __nv_bfloat16* bt, float* d, int k) {
    DV_DYNAMIC_SHARED(__nv_bfloat16, shared);
    __nv_bfloat16* a_tile = shared;             // 16 x 16
    __nv_bfloat16* b_tile = shared + 16 * 16;  // 8 x 16
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k0 = 0; k0 < k; k0 += 16) {
        // 16 rows of A and 8 of bt, 32 bytes each: 48 copies of 16 bytes.
        for (int piece = lane; piece < 48; piece += 32) {
            const int row = piece / 2, half = piece % 2;
            const __nv_bfloat16* from = row < 16 ? a + row * k + k0 + half * 8 : bt + (row - 16) * k + k0 + half * 8;
            __nv_bfloat16* to = row < 16 ? a_tile + row * 16 + half * 8 : b_tile + (row - 16) * 16 + half * 8;
            dv::cp_async_16(to, from);
        }
        dv::cp_async_commit();
        dv::cp_async_wait<0>();
        __syncthreads();
        // A's four 8x8 matrices in fragment order: (rows 0-7, cols 0-7), (8-15, 0-7),
        // (0-7, 8-15), (8-15, 8-15); bt's two: cols 0-7 and 8-15 of its 8 rows.
        const int m = lane / 8, r = lane % 8;
        uint32_t a_frag[4], b_frag[2];
        dv::ldmatrix<4, false>(a_frag, a_tile + ((m % 2) * 8 + r) * 16 + (m / 2) * 8);
        dv::ldmatrix<2, false>(b_frag, b_tile + r * 16 + (m % 2) * 8);
        dv::mma_bf16_16x8x16(acc, a_frag, b_frag, acc);
        __syncthreads();
    }
    for (int i = 0; i < 4; ++i) d[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = acc[i];
}

#ifdef DAVINCI_EMULATE
extern "C" {
void emu_ldmatrix_dump(const void* src, uint32_t* out) {
    emu::launch(dim3(1), dim3(32), 4 * 64 * 2, ldmatrix_dump, static_cast<const __nv_bfloat16*>(src), out);
}
void emu_mma_fragments(const uint32_t* a, const uint32_t* b, const float* c, float* d) {
    emu::launch(dim3(1), dim3(32), 0, mma_fragments, a, b, c, d);
}
void emu_gemm_16x8(const void* a, const void* bt, float* d, int k) {
    emu::launch(dim3(1), dim3(32), (16 * 16 + 8 * 16) * 2, gemm_16x8, static_cast<const __nv_bfloat16*>(a),
                static_cast<const __nv_bfloat16*>(bt), d, k);
}
}
#endif
