// The tile machinery of the attention kernels (kernels/flash_attention.cu; the work-list
// entry, the online softmax, quad reductions and stores serve kernels/flash_attention_sm90.cu
// too, whose wgmma accumulators have the same per-warp layout): swizzled shared tiles, their
// copies by cp.async, the ldmatrix fragments, the tensor-core products over them, the
// online softmax's row update and end, and the stores of C fragments. Everything here works on one warp's fragments
// (mma.sync m16n8k16, bf16 in, f32 accumulate; kernels/mma.cuh has the layouts) inside a
// block of kThreads threads.
#pragma once

#include "mma.cuh"

namespace fa {

/// Threads of every attention tile kernel: 4 warps.
constexpr int kThreads = 128;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLog2e = 1.4426950408889634f;

/// A work-list entry (`davinci_kernels::attention::Tile`). `first`: a query row (forward,
/// dQ) or a key row (dK/dV); the segment's rows follow.
struct Tile {
    int first, q_start, q_end, k_start, k_end;
    /// How far key rows run ahead of query rows on the causal diagonal: query row r sees
    /// the keys k_start..=r + diagonal().
    __device__ int diagonal() const { return k_end - q_end; }
    /// The last key query row `row` sees, or -1, below every key, for a row past the
    /// segment's end.
    __device__ int last_key(int row) const { return row < q_end ? row + diagonal() : -1; }
    /// The first query that sees key `first` (q_end, none, in a segment without queries).
    __device__ int first_query() const { return max(q_start, first - diagonal()); }
    /// Tiles of `keys` keys from the segment's first key to the last one that the query
    /// rows first..first + rows see.
    __device__ int key_tiles(int rows, int keys) const {
        return (min(first + rows, q_end) + diagonal() - k_start + keys - 1) / keys;
    }
    /// Whether some query row from `first` on must not see some key of the `keys` from
    /// key0: only tiles crossing the diagonal (row `first` sees up to first + diagonal) are
    /// masked, and every key past the segment's end lies beyond it.
    __device__ bool crosses_diagonal(int key0, int keys) const { return key0 + keys - 1 > first + diagonal(); }
};

/// The element (row, col) of a shared tile of rows of D bf16, swizzled: the row's 16-byte
/// chunks are permuted by XOR with row % 8. The eight rows one ldmatrix matrix reads (or a
/// warp's cp.async writes) then fall in eight different bank quads, without the padding
/// that would cost D = 128 its second block per SM on an A100.
template <int D>
__device__ __forceinline__ int swizzled(int row, int col) {
    static_assert(D >= 64, "the XOR spans 8 chunks of 16 bytes");
    return row * D + ((((col >> 3) ^ (row & 7)) << 3) | (col & 7));
}

/// Starts copying rows first..first+N of one head of a [tokens, heads, D] tensor into a
/// swizzled shared tile; rows at or past `end` are zeros. Unrolled over the block's
/// compile-time thread count, so each 16-byte copy is a few instructions, the end one
/// compare feeding the copy's source size (a second, unchecked version for tiles inside
/// the segment made ptxas if-convert both into the loop, which issued more).
template <int D, int N>
__device__ __forceinline__ void load_rows(__nv_bfloat16* shared, const __nv_bfloat16* global, int heads, int head,
                                          int first, int end) {
    constexpr int kChunks = D / 8, kRowStep = kThreads / kChunks, kCopies = N / kRowStep;
    static_assert(kThreads % kChunks == 0 && N % kRowStep == 0, "whole rows per pass");
    const int part = threadIdx.x % kChunks, row0 = threadIdx.x / kChunks;
    const size_t stride = static_cast<size_t>(heads) * D;
    const size_t at = (static_cast<size_t>(first + row0) * heads + head) * D + part * 8;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
        const bool valid = first + row0 + i * kRowStep < end;
        dv::cp_async_16_or_zero(shared + swizzled<D>(row0 + i * kRowStep, part * 8),
                                valid ? global + at + i * kRowStep * stride : global, valid);
    }
}

/// The A fragment (16 x 16) at rows row0.., cols col0.. of a shared tile.
template <int D>
__device__ __forceinline__ void a_fragment(uint32_t a[4], const __nv_bfloat16* tile, int row0, int col0) {
    const int lane = threadIdx.x % 32, m = lane / 8;
    dv::ldmatrix<4, false>(a, tile + swizzled<D>(row0 + (m % 2) * 8 + lane % 8, col0 + (m / 2) * 8));
}

/// The B fragments of two adjacent 16 x 8 tiles (b[0..2]: n0.., b[2..4]: n0 + 8..) of
/// B = T^T for a tile T stored [n][k]: one ldmatrix.x4 over rows n0..n0+16, cols k0..k0+16.
template <int D>
__device__ __forceinline__ void b_fragments_nk(uint32_t b[4], const __nv_bfloat16* tile, int n0, int k0) {
    const int lane = threadIdx.x % 32, m = lane / 8;
    dv::ldmatrix<4, false>(b, tile + swizzled<D>(n0 + (m / 2) * 8 + lane % 8, k0 + (m % 2) * 8));
}

/// The B fragments of two adjacent 16 x 8 tiles (cols n0.. and n0 + 8..) of a tile stored
/// [k][n], k rows k0..k0+16: one ldmatrix.x4.trans.
template <int D>
__device__ __forceinline__ void b_fragments_kn(uint32_t b[4], const __nv_bfloat16* tile, int k0, int n0) {
    const int lane = threadIdx.x % 32, m = lane / 8;
    dv::ldmatrix<4, true>(b, tile + swizzled<D>(k0 + (m % 2) * 8 + lane % 8, n0 + (m / 2) * 8));
}

/// C fragments of two adjacent 16x8 tiles as the A fragment of one 16x16 k-step.
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float left[4], const float right[4]) {
    a[0] = dv::pack_bf16(left[0], left[1]);
    a[1] = dv::pack_bf16(left[2], left[3]);
    a[2] = dv::pack_bf16(right[0], right[1]);
    a[3] = dv::pack_bf16(right[2], right[3]);
}

/// acc[m][n] (M fragments of 16 rows by 2 N_PAIRS columns of 8) += A_m times B over K_STEPS
/// steps of 16: `load_a(a, m, kk)` gives A_m's fragment for step kk, `load_b(b, kk, nn)` the
/// B fragments of column pair nn (one ldmatrix.x4). Each B fragment pair serves all M
/// fragments, and consecutive HMMAs write different accumulators, so none waits on the one
/// before.
template <int K_STEPS, int N_PAIRS, int M, class LoadA, class LoadB>
__device__ __forceinline__ void product(float (&acc)[M][2 * N_PAIRS][4], LoadA load_a, LoadB load_b) {
#pragma unroll
    for (int kk = 0; kk < K_STEPS; ++kk) {
        uint32_t a[M][4];
#pragma unroll
        for (int m = 0; m < M; ++m) load_a(a[m], m, kk);
#pragma unroll
        for (int nn = 0; nn < N_PAIRS; ++nn) {
            uint32_t b[4];
            load_b(b, kk, nn);
#pragma unroll
            for (int m = 0; m < M; ++m) {
                dv::mma_bf16_16x8x16(acc[m][2 * nn], a[m], b, acc[m][2 * nn]);
                dv::mma_bf16_16x8x16(acc[m][2 * nn + 1], a[m], b + 2, acc[m][2 * nn + 1]);
            }
        }
    }
}

/// acc[m] (M tiles of 16 x N) += A_m (16 x D) times B^T, B stored [n][d] in the shared
/// `b_tile` rows 0..N: scores from queries and keys. `load_a(a, m, kk)` gives A_m's
/// fragment for d = 16 kk.. (from shared memory or registers).
template <int D, int N, int M, class LoadA>
__device__ __forceinline__ void times_rows(float (&acc)[M][N / 8][4], LoadA load_a, const __nv_bfloat16* b_tile) {
    product<D / 16, N / 16, M>(acc, load_a, [&](uint32_t b[4], int kk, int nn) {
        b_fragments_nk<D>(b, b_tile, nn * 16, kk * 16);
    });
}

/// acc[m] (M tiles of 16 x D) += P_m (16 x K, in C fragments) times B (K x D, stored
/// [k][d] in the shared `b_tile`).
template <int D, int K, int M>
__device__ __forceinline__ void probs_times_rows(float (&acc)[M][D / 8][4], const float (&p)[M][K / 8][4],
                                                 const __nv_bfloat16* b_tile) {
    product<K / 16, D / 16, M>(
        acc, [&](uint32_t a[4], int m, int kk) { c_to_a(a, p[m][2 * kk], p[m][2 * kk + 1]); },
        [&](uint32_t b[4], int kk, int dd) { b_fragments_kn<D>(b, b_tile, kk * 16, dd * 16); });
}

/// The A operand of `times_rows` for a warp's M fragments of 16 rows from row0 of a shared
/// tile: read from shared memory at each use, or (kHeld) read once into registers, where a
/// tile that stays for the whole block saves shared-memory bandwidth in every step.
template <int D, int M, bool kHeld>
struct WarpRows {
    const __nv_bfloat16* tile;
    int row0;
    uint32_t held[kHeld ? M : 1][kHeld ? D / 16 : 1][4];

    /// With kHeld, the caller has made the tile's rows visible (a barrier after their copy).
    __device__ WarpRows(const __nv_bfloat16* tile_, int row0_) : tile(tile_), row0(row0_) {
        if constexpr (kHeld) {
#pragma unroll
            for (int m = 0; m < M; ++m) {
#pragma unroll
                for (int kk = 0; kk < D / 16; ++kk) a_fragment<D>(held[m][kk], tile, row0 + 16 * m, kk * 16);
            }
        }
    }

    __device__ void operator()(uint32_t a[4], int m, int kk) const {
        if constexpr (kHeld) {
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = held[m][kk][i];
        } else {
            a_fragment<D>(a, tile, row0 + 16 * m, kk * 16);
        }
    }
};

/// Sum (or max) over the four lanes of a quad, which hold one fragment row between them.
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/// One step of the online softmax for one fragment row (`half`: lane rows g or g + 8) of a
/// tile of N keys, whose lane columns are key0 + 8 nn + 2 t + (0, 1): keys past `last_key`
/// masked when `masked`, the row's running maximum raised, the scores replaced by
/// exp2(scale_log2 (s - max)), and this lane's share of the row's sum (the quad adds the
/// four at the end) rescaled and added to. Returns the factor that the row's output so far
/// must be multiplied by. Maxima stay in raw score units: the scale enters with the FFMA.
template <int N>
__device__ __forceinline__ float softmax_row(float (&s)[N / 8][4], int half, int key0, int last_key, bool masked,
                                             float scale_log2, float& row_max, float& row_sum) {
    const int t = threadIdx.x % 4;
    float tile_max = -INFINITY;
#pragma unroll
    for (int nn = 0; nn < N / 8; ++nn) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float& x = s[nn][2 * half + i];
            if (masked && key0 + nn * 8 + 2 * t + i > last_key) x = -INFINITY;
            tile_max = fmaxf(tile_max, x);
        }
    }
    const float new_max = fmaxf(row_max, quad_max(tile_max));
    const float base = new_max == -INFINITY ? 0.0f : new_max * scale_log2;  // a row with nothing yet
    const float rescale = dv::fast_exp2(fmaf(row_max, scale_log2, -base));
    float sum = 0.0f;
#pragma unroll
    for (int nn = 0; nn < N / 8; ++nn) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float& x = s[nn][2 * half + i];
            x = dv::fast_exp2(fmaf(x, scale_log2, -base));
            sum += x;
        }
    }
    row_sum = row_sum * rescale + sum;
    row_max = new_max;
    return rescale;
}

/// Multiplies one fragment row (`half`) of a 16 x D block of C fragments by `factor`.
template <int D>
__device__ __forceinline__ void scale_row(float (&acc)[D / 8][4], int half, float factor) {
#pragma unroll
    for (int dd = 0; dd < D / 8; ++dd) {
        acc[dd][2 * half] *= factor;
        acc[dd][2 * half + 1] *= factor;
    }
}

/// The forward's end for one fragment row of query row `row`: the quad's shares of the sum
/// added, the output divided by it (a row that saw no key stays zero), and the row's
/// log-sum-exp (natural log, which the backward reads) stored by the quad's first lane.
template <int D>
__device__ __forceinline__ void finish_row(float (&acc)[D / 8][4], int half, float row_max, float row_sum,
                                           float scale_log2, int row, int q_end, float* head_lse) {
    row_sum = quad_sum(row_sum);
    scale_row<D>(acc, half, row_sum > 0.0f ? 1.0f / row_sum : 0.0f);
    if (threadIdx.x % 4 == 0 && row < q_end) head_lse[row] = (row_max * scale_log2 + log2f(row_sum)) * kLn2;
}

/// Stores a 16 x D block of f32 C fragments as bf16 rows row0 + (0..16) of one head,
/// scaled, skipping rows at or past `end`: each lane's pair of columns as one 4-byte store.
template <int D>
__device__ __forceinline__ void store_rows(__nv_bfloat16* out, const float (&acc)[D / 8][4], int heads, int head,
                                           int row0, int end, float scale) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int row = row0 + g + 8 * half;
        if (row >= end) continue;
        uint32_t* dst = reinterpret_cast<uint32_t*>(out + (static_cast<size_t>(row) * heads + head) * D + 2 * t);
#pragma unroll
        for (int dd = 0; dd < D / 8; ++dd) {
            dst[dd * 4] = dv::pack_bf16(acc[dd][2 * half] * scale, acc[dd][2 * half + 1] * scale);
        }
    }
}

}  // namespace fa
