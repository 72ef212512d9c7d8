// Flash attention for packed variable-length rows: causal, never across segments,
// grouped-query heads, bf16 inputs with f32 accumulation, head_dim 64 or 128.
// q: [q_tokens, q_heads, D], k and v: [k_tokens, kv_heads, D]; query head h reads kv head
// h / (q_heads / kv_heads). Segment i holds the query rows cu_q[i]..cu_q[i+1] and the key
// rows cu_k[i]..cu_k[i+1], at least as many keys as queries, and its causal mask is
// aligned at the bottom right (as flash-attn's varlen functions): the query at offset t
// sees the keys at offsets 0..=t + (k_len - q_len). With cu_q == cu_k that is plain causal
// attention within each document; with a longer key side it is a chunk of a document's
// queries against the keys of its whole prefix (context parallelism). The forward writes o
// and the log-sum-exp of every query row (natural log, [q_heads, q_tokens]); the backward
// recomputes the probabilities from it.
//
// Tiles. Every kernel runs 4 warps (128 threads) on tensor cores: mma.sync m16n8k16 (bf16
// in, f32 accumulate), operands by ldmatrix (x4: each B load gives two 8-column fragments,
// which serve every 16-row fragment of the warp), tiles brought by 16-byte cp.async.
//   forward   128 queries (32 a warp, two fragments) x 64-key tiles (32 at D = 128, so the
//             scores and the 32 x 128 accumulators fit 255 registers); shared Q, one K and
//             one V tile (32 KB at D = 64, 48 KB at D = 128). V_j is copied while
//             S = Q K_j^T and its softmax run, K_{j+1} while O += P V_j. At D = 64 each
//             warp holds its Q fragments in registers.
//   dQ        as the forward's: 128 queries (32 a warp) x 64-key tiles (32 at D = 128):
//             Q, dO + 2 x (K, V) (64 KB, 96 KB).
//   dK, dV    64 keys (16 a warp) x 32-query tiles: K, V + 2 x (Q, dO), and each query's
//             lse and D by 4-byte cp.async (32.5 KB, 64.5 KB); K's fragments (and V's at
//             D = 64) held in registers.
// Registers (ptxas of CUDA 13.0, __launch_bounds__(128, 2)): about 170-250, no spills; two
// blocks (8 warps) per SM. Shared rows are swizzled, not padded: their 16-byte chunks are
// XORed with the row's low 3 bits, so ldmatrix's eight row addresses hit eight bank quads.
// The softmax runs in base 2 with the scale folded into one FFMA before ex2.approx, and only
// tiles crossing the diagonal are masked. docs/kernels.md has the static performance
// model's figures for each kernel.
//
// Work lists. The host gives each kernel a table of tiles {first row, the segment's query
// rows, its key rows}: query tiles for the forward and dQ, key tiles for dK/dV, sorted so
// the tiles with the most work start first (the causal triangle and short segments leave
// later blocks little to do). Key tiles start at the segment's first key and query tiles at
// its first query, so the diagonal may cross a tile anywhere: every score is masked by
// its own row and column (key <= query + k_end - q_end), never by tile. Key tiles past a
// query tile's diagonal, and query steps before a key tile's, are never visited; partial
// tiles at a segment's end load zeros past it, and what those rows give is masked or never
// stored.
//
// The backward is two kernels so that nothing is summed with atomics and the result is
// the same on every run: dK and dV (a block per key tile and kv head, looping over the
// query heads of the group, so the group's sum stays in registers), and dQ (a block per
// query tile and head). Both recompute P from the saved log-sum-exp, with
// D = rowsum(dO * O) computed first by `flash_attention_delta`.
#include "attention_tiles.cuh"

namespace fa {

constexpr int kQueryRows = 128;    // query rows per forward and dQ block: 32 per warp
constexpr int kRows = 64;          // keys per dK/dV block: 16 per warp
constexpr int kQueries = 32;       // queries per tile in dK/dV
/// Keys per tile in the forward and dQ: 32 at D = 128, where 64 keys' scores on top of the
/// 32 x 128 accumulators a warp holds would not fit the 255 registers a thread can have.
template <int D>
constexpr int kKeysPerStep = D == 128 ? 32 : 64;
static_assert(kRows == 16 * (kThreads / 32), "each warp owns 16 rows of a dK/dV tile");
static_assert(kQueryRows == 32 * (kThreads / 32), "each warp owns 32 rows of a forward tile");

/// The block's query tile and head, and this thread's warp and its place in the warp's
/// fragments (g = lane / 4, t = lane % 4), for the kernels that own query rows.
struct QueryPlace {
    Tile tile;
    int head, kv_head, warp, g, t, row0;  // row0: the warp's first row
    /// The row of fragment m's half `half` (0: rows g, 1: rows g + 8).
    __device__ int row(int m, int half) const { return row0 + 16 * m + g + 8 * half; }
    /// The last key that row sees (on the bottom-right diagonal).
    __device__ int last_key(int m, int half) const { return tile.last_key(row(m, half)); }
};

__device__ __forceinline__ QueryPlace query_place(const Tile* tiles, int q_heads, int kv_heads, int rows_per_warp) {
    const int head = blockIdx.y, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const Tile tile = tiles[blockIdx.x];
    return {tile, head, head / (q_heads / kv_heads), warp, lane / 4, lane % 4, tile.first + warp * rows_per_warp};
}

/// The forward: a block per (128 query rows, head), 32 rows a warp. K and V have a buffer
/// each: V_j is copied while S = Q K_j^T and its softmax are computed, K_{j+1} while
/// O += P V_j (FlashAttention-2's order), so every copy overlaps a matrix product and
/// D = 128 fits two blocks on an A100. The scale is folded into one FFMA before ex2, and
/// only tiles crossing the diagonal are masked.
template <int D>
__device__ void forward(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                        const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ out, float* __restrict__ lse,
                        const Tile* __restrict__ tiles, int q_tokens, int q_heads, int kv_heads, float scale_log2) {
    constexpr int M = kQueryRows / kThreads * 32 / 16;  // 16-row fragments per warp
    constexpr int N = kKeysPerStep<D>;
    DV_DYNAMIC_SHARED(__nv_bfloat16, shared);
    __nv_bfloat16* q_tile = shared;
    __nv_bfloat16* k_tile = shared + kQueryRows * D;
    __nv_bfloat16* v_tile = k_tile + N * D;
    const QueryPlace at = query_place(tiles, q_heads, kv_heads, 16 * M);
    const Tile tile = at.tile;
    const int count = tile.key_tiles(kQueryRows, N);

    load_rows<D, kQueryRows>(q_tile, q, q_heads, at.head, tile.first, tile.q_end);
    load_rows<D, N>(k_tile, k, kv_heads, at.kv_head, tile.k_start, tile.k_end);
    dv::cp_async_commit();

    // At D = 64 the warp's Q fragments (32 registers) are held for the whole block; at
    // D = 128 they would take 64 registers the accumulators need, so they are read from
    // shared memory at each step.
    dv::cp_async_wait<0>();
    __syncthreads();
    const WarpRows<D, M, D == 64> queries(q_tile, at.warp * 16 * M);
    float acc[M][D / 8][4] = {};
    float row_max[M][2], row_sum[M][2];
#pragma unroll
    for (int m = 0; m < M; ++m) {
        row_max[m][0] = row_max[m][1] = -INFINITY;
        row_sum[m][0] = row_sum[m][1] = 0.0f;
    }
    for (int j = 0; j < count; ++j) {
        const int key0 = tile.k_start + j * N;
        dv::cp_async_wait<0>();
        __syncthreads();  // K_j is in, and every warp is done with V_{j-1}
        load_rows<D, N>(v_tile, v, kv_heads, at.kv_head, key0, tile.k_end);
        dv::cp_async_commit();

        float s[M][N / 8][4] = {};
        times_rows<D, N, M>(s, queries, k_tile);
        const bool masked = tile.crosses_diagonal(key0, N);
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const float rescale = softmax_row<N>(s[m], half, key0, at.last_key(m, half), masked, scale_log2,
                                                     row_max[m][half], row_sum[m][half]);
                scale_row<D>(acc[m], half, rescale);
            }
        }
        dv::cp_async_wait<0>();
        __syncthreads();  // V_j is in, and every warp is done with K_j
        if (j + 1 < count) load_rows<D, N>(k_tile, k, kv_heads, at.kv_head, key0 + N, tile.k_end);
        dv::cp_async_commit();
        probs_times_rows<D, N, M>(acc, s, v_tile);
    }

#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            finish_row<D>(acc[m], half, row_max[m][half], row_sum[m][half], scale_log2, at.row(m, half), tile.q_end,
                          lse + static_cast<size_t>(at.head) * q_tokens);
        }
        store_rows<D>(out, acc[m], q_heads, at.head, at.row0 + 16 * m, tile.q_end, 1.0f);
    }
}

/// dQ: a block per (128 query rows, head) as the forward's, 32 rows a warp, so each K or V
/// fragment serves two 16-row fragments; K and V double-buffered in steps of the forward's
/// key count.
template <int D>
__device__ void backward_dq(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                            const __nv_bfloat16* __restrict__ v, const __nv_bfloat16* __restrict__ d_o,
                            const float* __restrict__ lse, const float* __restrict__ delta,
                            __nv_bfloat16* __restrict__ dq, const Tile* __restrict__ tiles, int q_tokens, int q_heads,
                            int kv_heads, float scale_log2, float scale) {
    constexpr int M = kQueryRows / kThreads * 32 / 16, N = kKeysPerStep<D>;
    DV_DYNAMIC_SHARED(__nv_bfloat16, shared);
    __nv_bfloat16* q_tile = shared;
    __nv_bfloat16* do_tile = shared + kQueryRows * D;
    __nv_bfloat16* buffers = shared + 2 * kQueryRows * D;
    auto k_tile = [&](int j) { return buffers + (2 * (j % 2)) * N * D; };
    auto v_tile = [&](int j) { return buffers + (2 * (j % 2) + 1) * N * D; };
    const QueryPlace at = query_place(tiles, q_heads, kv_heads, 16 * M);
    const Tile tile = at.tile;
    const int count = tile.key_tiles(kQueryRows, N);
    auto load_keys = [&](int j) {
        load_rows<D, N>(k_tile(j), k, kv_heads, at.kv_head, tile.k_start + j * N, tile.k_end);
        load_rows<D, N>(v_tile(j), v, kv_heads, at.kv_head, tile.k_start + j * N, tile.k_end);
    };

    load_rows<D, kQueryRows>(q_tile, q, q_heads, at.head, tile.first, tile.q_end);
    load_rows<D, kQueryRows>(do_tile, d_o, q_heads, at.head, tile.first, tile.q_end);
    load_keys(0);
    dv::cp_async_commit();

    // Rows past the segment get an infinite lse, so their probabilities are zeros unmasked.
    float row_lse[M][2], row_delta[M][2];
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int row = at.row(m, half);
            const bool valid = row < tile.q_end;
            row_lse[m][half] = valid ? lse[static_cast<size_t>(at.head) * q_tokens + row] * kLog2e : INFINITY;
            row_delta[m][half] = valid ? delta[static_cast<size_t>(at.head) * q_tokens + row] : 0.0f;
        }
    }
    const WarpRows<D, M, false> queries(q_tile, at.warp * 16 * M), gradients(do_tile, at.warp * 16 * M);
    float acc[M][D / 8][4] = {};
    for (int j = 0; j < count; ++j) {
        const int key0 = tile.k_start + j * N;
        if (j + 1 < count) {
            load_keys(j + 1);
            dv::cp_async_commit();
            dv::cp_async_wait<1>();
        } else {
            dv::cp_async_wait<0>();
        }
        __syncthreads();

        float p[M][N / 8][4] = {}, dp[M][N / 8][4] = {};
        times_rows<D, N, M>(p, queries, k_tile(j));
        times_rows<D, N, M>(dp, gradients, v_tile(j));
        const bool masked = tile.crosses_diagonal(key0, N);
#pragma unroll
        for (int m = 0; m < M; ++m) {
#pragma unroll
            for (int nn = 0; nn < N / 8; ++nn) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int half = e / 2, key = key0 + nn * 8 + 2 * at.t + e % 2;
                    float prob = dv::fast_exp2(fmaf(p[m][nn][e], scale_log2, -row_lse[m][half]));
                    if (masked && key > at.last_key(m, half)) prob = 0.0f;
                    p[m][nn][e] = prob * (dp[m][nn][e] - row_delta[m][half]);  // dS
                }
            }
        }
        probs_times_rows<D, N, M>(acc, p, k_tile(j));
        __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < M; ++m) store_rows<D>(dq, acc[m], q_heads, at.head, at.row0 + 16 * m, tile.q_end, scale);
}

/// dK and dV: a block per (64 key rows, kv head), 16 rows a warp, looping over the group's
/// query heads and their query tiles of 32, double-buffered with each query's lse and D
/// (brought by cp.async too, so no step waits on a plain load).
template <int D>
__device__ void backward_dkdv(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                              const __nv_bfloat16* __restrict__ v, const __nv_bfloat16* __restrict__ d_o,
                              const float* __restrict__ lse, const float* __restrict__ delta,
                              __nv_bfloat16* __restrict__ dk, __nv_bfloat16* __restrict__ dv_out,
                              const Tile* __restrict__ tiles, int q_tokens, int q_heads, int kv_heads, float scale_log2,
                              float scale) {
    DV_DYNAMIC_SHARED(__nv_bfloat16, shared);
    __nv_bfloat16* k_tile = shared;
    __nv_bfloat16* v_tile = shared + kRows * D;
    __nv_bfloat16* qdo_tiles = shared + 2 * kRows * D;
    auto q_tile = [&](int buffer) { return qdo_tiles + (2 * buffer) * kQueries * D; };
    auto do_tile = [&](int buffer) { return qdo_tiles + (2 * buffer + 1) * kQueries * D; };
    // Per buffer: the tile's queries' lse (natural log) then their D.
    float* row_stats = reinterpret_cast<float*>(qdo_tiles + 4 * kQueries * D);

    const Tile tile = tiles[blockIdx.x];
    const int kv_head = blockIdx.y, group = q_heads / kv_heads;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int diagonal = tile.diagonal(), q_from = tile.first_query();
    const int query_tiles = (tile.q_end - q_from + kQueries - 1) / kQueries;
    const int steps = group * query_tiles;
    // Step s: query head kv_head * group + s / query_tiles, queries from q0(s).
    auto q0 = [&](int s) { return q_from + (s % query_tiles) * kQueries; };
    auto head_of = [&](int s) { return kv_head * group + s / query_tiles; };
    auto prefetch = [&](int s, int buffer) {
        load_rows<D, kQueries>(q_tile(buffer), q, q_heads, head_of(s), q0(s), tile.q_end);
        load_rows<D, kQueries>(do_tile(buffer), d_o, q_heads, head_of(s), q0(s), tile.q_end);
        if (threadIdx.x < 2 * kQueries) {
            const int i = threadIdx.x % kQueries, row = q0(s) + i;
            const float* from = threadIdx.x < kQueries ? lse : delta;
            const bool valid = row < tile.q_end;
            dv::cp_async_4_or_zero(row_stats + buffer * 2 * kQueries + threadIdx.x,
                                   valid ? from + static_cast<size_t>(head_of(s)) * q_tokens + row : from, valid);
        }
    };

    if (steps == 0) {  // a segment without queries: its keys' gradients are zeros
        const float zeros[D / 8][4] = {};
        store_rows<D>(dk, zeros, kv_heads, kv_head, tile.first + warp * 16, tile.k_end, 1.0f);
        store_rows<D>(dv_out, zeros, kv_heads, kv_head, tile.first + warp * 16, tile.k_end, 1.0f);
        return;
    }
    load_rows<D, kRows>(k_tile, k, kv_heads, kv_head, tile.first, tile.k_end);
    load_rows<D, kRows>(v_tile, v, kv_heads, kv_head, tile.first, tile.k_end);
    prefetch(0, 0);
    dv::cp_async_commit();
    dv::cp_async_wait<0>();
    __syncthreads();
    // K and V stay for the whole block: K's fragments are held in registers, and V's too at
    // D = 64 (at D = 128 the accumulators leave room for one of them only).
    const WarpRows<D, 1, true> keys(k_tile, warp * 16);
    const WarpRows<D, 1, D == 64> values(v_tile, warp * 16);
    // The first query that sees this thread's key row g (row g + 8's is 8 later). Rows
    // past the segment's keys need no mask: their K and V are zeros and never stored;
    // queries past the segment's end have zero Q and dO, so they add nothing unmasked.
    const int first_query = tile.first + warp * 16 + g - diagonal;

    float acc_dk[1][D / 8][4] = {}, acc_dv[1][D / 8][4] = {};
    for (int s = 0; s < steps; ++s) {
        const int buffer = s % 2, step_first = q0(s);
        if (s + 1 < steps) {
            prefetch(s + 1, 1 - buffer);
            dv::cp_async_commit();
            dv::cp_async_wait<1>();
        } else {
            dv::cp_async_wait<0>();
        }
        __syncthreads();

        const float* stats = row_stats + buffer * 2 * kQueries;
        float p[1][kQueries / 8][4] = {}, dp[1][kQueries / 8][4] = {};
        times_rows<D, kQueries, 1>(p, keys, q_tile(buffer));     // S^T
        times_rows<D, kQueries, 1>(dp, values, do_tile(buffer));  // dP^T
        // Masked only where some key row of the tile does not see the step's first query.
        const bool masked = step_first < tile.first + kRows - 1 - diagonal;
#pragma unroll
        for (int nn = 0; nn < kQueries / 8; ++nn) {
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const int column = nn * 8 + 2 * t + i, query = step_first + column;
                const float column_lse = stats[column] * kLog2e, column_delta = stats[kQueries + column];
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int e = 2 * half + i;
                    float prob = dv::fast_exp2(fmaf(p[0][nn][e], scale_log2, -column_lse));
                    if (masked && query < first_query + 8 * half) prob = 0.0f;
                    p[0][nn][e] = prob;
                    dp[0][nn][e] = prob * (dp[0][nn][e] - column_delta);  // dS^T
                }
            }
        }
        probs_times_rows<D, kQueries, 1>(acc_dv, p, do_tile(buffer));
        probs_times_rows<D, kQueries, 1>(acc_dk, dp, q_tile(buffer));
        __syncthreads();
    }
    store_rows<D>(dk, acc_dk[0], kv_heads, kv_head, tile.first + warp * 16, tile.k_end, scale);
    store_rows<D>(dv_out, acc_dv[0], kv_heads, kv_head, tile.first + warp * 16, tile.k_end, 1.0f);
}

}  // namespace fa

/// D = rowsum(dO * O) for every (head, token), in f32: a warp per row in a grid-stride
/// loop, its lanes reading consecutive elements (one 64-byte transaction per operand and
/// pass) and the warp summing them in a fixed order.
extern "C" __global__ void flash_attention_delta(const __nv_bfloat16* o, const __nv_bfloat16* d_o, float* delta,
                                                 int tokens, int heads, int head_dim) {
    const size_t rows = static_cast<size_t>(tokens) * heads;
    const size_t warps_per_block = blockDim.x / 32, warps = gridDim.x * warps_per_block;
    const int lane = threadIdx.x % 32;
    for (size_t p = blockIdx.x * warps_per_block + threadIdx.x / 32; p < rows; p += warps) {
        float sum = 0.0f;
        for (int d = lane; d < head_dim; d += 32) {
            sum += __bfloat162float(o[p * head_dim + d]) * __bfloat162float(d_o[p * head_dim + d]);
        }
        sum = dv::warp_sum(sum);
        if (lane == 0) delta[(p % heads) * tokens + p / heads] = sum;
    }
}

#define FLASH_ATTENTION_KERNELS(D)                                                                              \
    extern "C" __global__ void __launch_bounds__(fa::kThreads, 2) flash_attention_fwd_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k,         \
                                                        const __nv_bfloat16* v, __nv_bfloat16* out, float* lse, \
                                                        const fa::Tile* tiles, int q_tokens, int q_heads,      \
                                                        int kv_heads, float scale_log2) {                      \
        fa::forward<D>(q, k, v, out, lse, tiles, q_tokens, q_heads, kv_heads, scale_log2);                     \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(fa::kThreads, 2) flash_attention_dq_d##D(                                                        \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* d_o,      \
        const float* lse, const float* delta, __nv_bfloat16* dq, const fa::Tile* tiles, int q_tokens,          \
        int q_heads, int kv_heads, float scale_log2, float scale) {                                            \
        fa::backward_dq<D>(q, k, v, d_o, lse, delta, dq, tiles, q_tokens, q_heads, kv_heads, scale_log2,       \
                           scale);                                                                              \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(fa::kThreads, 2) flash_attention_dkdv_d##D(                                                      \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* d_o,      \
        const float* lse, const float* delta, __nv_bfloat16* dk, __nv_bfloat16* dv, const fa::Tile* tiles,     \
        int q_tokens, int q_heads, int kv_heads, float scale_log2, float scale) {                              \
        fa::backward_dkdv<D>(q, k, v, d_o, lse, delta, dk, dv, tiles, q_tokens, q_heads, kv_heads, scale_log2, \
                             scale);                                                                            \
    }
FLASH_ATTENTION_KERNELS(64)
FLASH_ATTENTION_KERNELS(128)

DV_EMULATION_TABLE(flash_attention, DV_EMULATED(flash_attention_delta), DV_EMULATED(flash_attention_fwd_d64),
                   DV_EMULATED(flash_attention_fwd_d128), DV_EMULATED(flash_attention_dq_d64),
                   DV_EMULATED(flash_attention_dq_d128), DV_EMULATED(flash_attention_dkdv_d64),
                   DV_EMULATED(flash_attention_dkdv_d128))
