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
// Tiles. Every kernel runs 4 warps (128 threads), each warp owning 16 rows of the block's
// tile, and works on tensor cores: mma.sync m16n8k16 (bf16 in, f32 accumulate) with its
// operands loaded by ldmatrix from shared memory, and K/V (or Q/dO) tiles brought in by
// cp.async, the next tile's copy in flight while the current one is used (double buffer).
//   forward   64 queries x 64-key tiles: shared Q + 2 x (K, V) = 5 x 64 x (D + 8) bf16
//             (45 KB at D = 64, 85 KB at D = 128).
//   dQ        64 queries x 64-key tiles: Q, dO + 2 x (K, V): 6 x 64 x (D + 8) bf16
//             (54 KB, 102 KB).
//   dK, dV    64 keys x 32-query tiles: K, V + 2 x (Q, dO), and each query's lse and D
//             (36.5 KB, 68.5 KB).
// Registers (ptxas of CUDA 13.0, sm_90a): forward 112 (D 64) and 127 (D 128), dQ 127 and
// 177, dK/dV 127 and 216, no spills. On an H100 that is 4 blocks (16 warps) per SM at
// D = 64 and 2 blocks (8 warps) at D = 128, limited at D = 128 by shared memory in the
// forward, by shared memory and registers in dQ, and by registers in dK/dV.
// Rows are padded by 8 elements so that ldmatrix's eight row addresses fall in different
// banks and stay 16-byte aligned. docs/kernels.md tabulates both targets.
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
#include "mma.cuh"

namespace fa {

constexpr int kThreads = 128;
constexpr int kRows = 64;       // rows per block: queries (forward, dQ) or keys (dK/dV)
constexpr int kKeys = 64;       // keys per tile in the forward and dQ
constexpr int kQueries = 32;    // queries per tile in dK/dV
constexpr int kPad = 8;         // bf16 padding per shared row
constexpr float kLn2 = 0.6931471805599453f;
static_assert(kRows == 16 * (kThreads / 32), "each warp owns 16 rows of the block's tile");

/// `first`: a query row (forward, dQ) or a key row (dK/dV); the segment's rows follow.
struct Tile {
    int first, q_start, q_end, k_start, k_end;
    /// How far key rows run ahead of query rows on the causal diagonal: query row r sees
    /// the keys k_start..=r + diagonal().
    __device__ int diagonal() const { return k_end - q_end; }
};

/// Elements per shared row of a head of D.
template <int D>
constexpr int kStride = D + kPad;

/// Starts copying rows first..first+rows of one head of a [tokens, heads, D] tensor into
/// shared memory; rows at or past `end` are zeros.
template <int D>
__device__ __forceinline__ void load_rows(__nv_bfloat16* shared, const __nv_bfloat16* global, int heads, int head,
                                          int first, int rows, int end) {
    constexpr int kChunks = D / 8;
    for (int c = threadIdx.x; c < rows * kChunks; c += blockDim.x) {
        const int r = c / kChunks, part = c % kChunks, token = first + r;
        const bool valid = token < end;
        const __nv_bfloat16* from = valid ? global + (static_cast<size_t>(token) * heads + head) * D + part * 8 : global;
        dv::cp_async_16_or_zero(shared + r * kStride<D> + part * 8, from, valid);
    }
}

/// The A fragment (16 x 16) at rows row0.., cols col0.. of a shared tile.
template <int D>
__device__ __forceinline__ void a_fragment(uint32_t a[4], const __nv_bfloat16* tile, int row0, int col0) {
    const int lane = threadIdx.x % 32, m = lane / 8;
    dv::ldmatrix<4, false>(a, tile + (row0 + (m % 2) * 8 + lane % 8) * kStride<D> + col0 + (m / 2) * 8);
}

/// The B fragment (16 x 8) of B = T^T for a tile T stored [n][k]: n rows n0..n0+8, k cols k0...
template <int D>
__device__ __forceinline__ void b_fragment_nk(uint32_t b[2], const __nv_bfloat16* tile, int n0, int k0) {
    const int lane = threadIdx.x % 32;
    dv::ldmatrix<2, false>(b, tile + (n0 + lane % 8) * kStride<D> + k0 + ((lane / 8) % 2) * 8);
}

/// The B fragment (16 x 8) of a tile stored [k][n]: k rows k0..k0+16, n cols n0..n0+8.
template <int D>
__device__ __forceinline__ void b_fragment_kn(uint32_t b[2], const __nv_bfloat16* tile, int k0, int n0) {
    const int lane = threadIdx.x % 32;
    dv::ldmatrix<2, true>(b, tile + (k0 + lane % 8 + ((lane / 8) % 2) * 8) * kStride<D> + n0);
}

/// C fragments of two adjacent 16x8 tiles as the A fragment of one 16x16 k-step.
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float left[4], const float right[4]) {
    a[0] = dv::pack_bf16(left[0], left[1]);
    a[1] = dv::pack_bf16(left[2], left[3]);
    a[2] = dv::pack_bf16(right[0], right[1]);
    a[3] = dv::pack_bf16(right[2], right[3]);
}

/// acc[N/8] (16 x N) += A (16 x D, rows row0.. of `a_tile`) times B^T where B is stored
/// [n][d] (`b_tile` rows n0..n0+N): scores from queries and keys.
template <int D, int N>
__device__ __forceinline__ void rows_times_rows(float acc[][4], const __nv_bfloat16* a_tile, int row0,
                                                const __nv_bfloat16* b_tile, int n0) {
    for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a[4];
        a_fragment<D>(a, a_tile, row0, kk * 16);
        for (int nn = 0; nn < N / 8; ++nn) {
            uint32_t b[2];
            b_fragment_nk<D>(b, b_tile, n0 + nn * 8, kk * 16);
            dv::mma_bf16_16x8x16(acc[nn], a, b, acc[nn]);
        }
    }
}

/// acc[D/8] (16 x D) += P (16 x K, in C fragments p[K/8]) times B (K x D, stored [k][d]).
template <int D, int K>
__device__ __forceinline__ void probs_times_rows(float acc[][4], const float p[][4], const __nv_bfloat16* b_tile) {
    for (int kk = 0; kk < K / 16; ++kk) {
        uint32_t a[4];
        c_to_a(a, p[2 * kk], p[2 * kk + 1]);
        for (int dd = 0; dd < D / 8; ++dd) {
            uint32_t b[2];
            b_fragment_kn<D>(b, b_tile, kk * 16, dd * 8);
            dv::mma_bf16_16x8x16(acc[dd], a, b, acc[dd]);
        }
    }
}

/// Sum (or max) over the four lanes of a quad, which hold one fragment row between them.
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/// Stores a 16 x D block of f32 C fragments as bf16 rows row0 + (0..16) of one head,
/// scaled, skipping rows at or past `end`.
template <int D>
__device__ __forceinline__ void store_rows(__nv_bfloat16* out, const float acc[][4], int heads, int head, int row0,
                                           int end, float scale) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    for (int half = 0; half < 2; ++half) {
        const int row = row0 + g + 8 * half;
        if (row >= end) continue;
        __nv_bfloat16* dst = out + (static_cast<size_t>(row) * heads + head) * D;
        for (int dd = 0; dd < D / 8; ++dd) {
            dst[dd * 8 + 2 * t] = __float2bfloat16(acc[dd][2 * half] * scale);
            dst[dd * 8 + 2 * t + 1] = __float2bfloat16(acc[dd][2 * half + 1] * scale);
        }
    }
}

/// The block's query tile and head, and this thread's warp and its place in the warp's
/// fragments (g = lane / 4, t = lane % 4), for the kernels that own query rows.
struct QueryPlace {
    Tile tile;
    int head, kv_head, warp, g, t;
    /// The row of fragment half `half` (0: rows g, 1: rows g + 8) of this thread's warp.
    __device__ int row(int half) const { return tile.first + warp * 16 + g + 8 * half; }
    /// The last key that row sees (on the bottom-right diagonal), or -1, below every key,
    /// for a row past the segment's end.
    __device__ int last_key(int half) const {
        const int r = row(half);
        return r < tile.q_end ? r + tile.diagonal() : -1;
    }
};

__device__ __forceinline__ QueryPlace query_place(const Tile* tiles, int q_heads, int kv_heads) {
    const int head = blockIdx.y, lane = threadIdx.x % 32;
    return {tiles[blockIdx.x], head, head / (q_heads / kv_heads), static_cast<int>(threadIdx.x / 32), lane / 4,
            lane % 4};
}

/// The K/V tiles a query tile visits, from its segment's first key to the last key its
/// last row sees, double-buffered in shared memory (`buffers`: 2 x (K, V) tiles of kKeys
/// rows).
template <int D>
struct KeyStream {
    __nv_bfloat16* buffers;
    const __nv_bfloat16* k;
    const __nv_bfloat16* v;
    int kv_heads, kv_head, k_start, k_end, count;

    __device__ KeyStream(__nv_bfloat16* buffers_, const __nv_bfloat16* k_, const __nv_bfloat16* v_, int kv_heads_,
                         const QueryPlace& at)
        : buffers(buffers_), k(k_), v(v_), kv_heads(kv_heads_), kv_head(at.kv_head), k_start(at.tile.k_start),
          k_end(at.tile.k_end),
          count((min(at.tile.first + kRows, at.tile.q_end) + at.tile.diagonal() - at.tile.k_start + kKeys - 1) /
                kKeys) {}

    __device__ __nv_bfloat16* k_tile(int j) const { return buffers + (2 * (j % 2)) * kKeys * kStride<D>; }
    __device__ __nv_bfloat16* v_tile(int j) const { return buffers + (2 * (j % 2) + 1) * kKeys * kStride<D>; }
    __device__ int first_key(int j) const { return k_start + j * kKeys; }

    /// Starts copying tile j; the caller commits.
    __device__ void load(int j) const {
        load_rows<D>(k_tile(j), k, kv_heads, kv_head, first_key(j), kKeys, k_end);
        load_rows<D>(v_tile(j), v, kv_heads, kv_head, first_key(j), kKeys, k_end);
    }

    /// Makes tile j ready for every thread, with tile j + 1's copy started behind it.
    __device__ void wait_for(int j) const {
        if (j + 1 < count) {
            load(j + 1);
            dv::cp_async_commit();
            dv::cp_async_wait<1>();
        } else {
            dv::cp_async_wait<0>();
        }
        __syncthreads();
    }
};

template <int D>
__device__ void forward(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                        const __nv_bfloat16* __restrict__ v, __nv_bfloat16* __restrict__ out, float* __restrict__ lse,
                        const Tile* __restrict__ tiles, int q_tokens, int q_heads, int kv_heads, float scale_log2) {
    DV_DYNAMIC_SHARED(__nv_bfloat16, shared);
    __nv_bfloat16* q_tile = shared;
    const QueryPlace at = query_place(tiles, q_heads, kv_heads);
    const KeyStream<D> keys(shared + kRows * kStride<D>, k, v, kv_heads, at);
    const Tile tile = at.tile;
    const int warp = at.warp, t = at.t;

    load_rows<D>(q_tile, q, q_heads, at.head, tile.first, kRows, tile.q_end);
    keys.load(0);
    dv::cp_async_commit();

    float acc[D / 8][4] = {};
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
    for (int j = 0; j < keys.count; ++j) {
        const int key0 = keys.first_key(j);
        keys.wait_for(j);

        float s[kKeys / 8][4] = {};
        rows_times_rows<D, kKeys>(s, q_tile, warp * 16, keys.k_tile(j), 0);
        for (int half = 0; half < 2; ++half) {
            const int last_key = at.last_key(half);
            float tile_max = -INFINITY;
            for (int nn = 0; nn < kKeys / 8; ++nn) {
                for (int i = 0; i < 2; ++i) {
                    const int key = key0 + nn * 8 + 2 * t + i;
                    float& x = s[nn][2 * half + i];
                    x = key <= last_key ? x * scale_log2 : -INFINITY;
                    tile_max = fmaxf(tile_max, x);
                }
            }
            const float new_max = fmaxf(row_max[half], quad_max(tile_max));
            const float base = new_max == -INFINITY ? 0.0f : new_max;  // a row with nothing yet
            const float rescale = exp2f(row_max[half] - base);
            float sum = 0.0f;
            for (int nn = 0; nn < kKeys / 8; ++nn) {
                for (int i = 0; i < 2; ++i) {
                    float& x = s[nn][2 * half + i];
                    x = exp2f(x - base);
                    sum += x;
                }
            }
            row_sum[half] = row_sum[half] * rescale + quad_sum(sum);
            row_max[half] = new_max;
            for (int dd = 0; dd < D / 8; ++dd) {
                acc[dd][2 * half] *= rescale;
                acc[dd][2 * half + 1] *= rescale;
            }
        }
        probs_times_rows<D, kKeys>(acc, s, keys.v_tile(j));
        __syncthreads();  // every warp is done with this buffer before it is refilled
    }

    for (int half = 0; half < 2; ++half) {
        const int row = at.row(half);
        const float inv = row_sum[half] > 0.0f ? 1.0f / row_sum[half] : 0.0f;
        for (int dd = 0; dd < D / 8; ++dd) {
            acc[dd][2 * half] *= inv;
            acc[dd][2 * half + 1] *= inv;
        }
        if (t == 0 && row < tile.q_end) {
            lse[static_cast<size_t>(at.head) * q_tokens + row] = (row_max[half] + log2f(row_sum[half])) * kLn2;
        }
    }
    store_rows<D>(out, acc, q_heads, at.head, tile.first + warp * 16, tile.q_end, 1.0f);
}

}  // namespace fa

namespace fa {

constexpr float kLog2e = 1.4426950408889634f;

template <int D>
__device__ void backward_dq(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                            const __nv_bfloat16* __restrict__ v, const __nv_bfloat16* __restrict__ d_o,
                            const float* __restrict__ lse, const float* __restrict__ delta,
                            __nv_bfloat16* __restrict__ dq, const Tile* __restrict__ tiles, int q_tokens, int q_heads,
                            int kv_heads, float scale_log2, float scale) {
    DV_DYNAMIC_SHARED(__nv_bfloat16, shared);
    __nv_bfloat16* q_tile = shared;
    __nv_bfloat16* do_tile = shared + kRows * kStride<D>;
    const QueryPlace at = query_place(tiles, q_heads, kv_heads);
    const KeyStream<D> keys(shared + 2 * kRows * kStride<D>, k, v, kv_heads, at);
    const Tile tile = at.tile;
    const int warp = at.warp, t = at.t;

    load_rows<D>(q_tile, q, q_heads, at.head, tile.first, kRows, tile.q_end);
    load_rows<D>(do_tile, d_o, q_heads, at.head, tile.first, kRows, tile.q_end);
    keys.load(0);
    dv::cp_async_commit();

    float row_lse[2], row_delta[2];
    for (int half = 0; half < 2; ++half) {
        const int row = at.row(half);
        const bool valid = row < tile.q_end;
        row_lse[half] = valid ? lse[static_cast<size_t>(at.head) * q_tokens + row] * kLog2e : 0.0f;
        row_delta[half] = valid ? delta[static_cast<size_t>(at.head) * q_tokens + row] : 0.0f;
    }
    float acc[D / 8][4] = {};
    for (int j = 0; j < keys.count; ++j) {
        const int key0 = keys.first_key(j);
        keys.wait_for(j);

        float p[kKeys / 8][4] = {}, dp[kKeys / 8][4] = {};
        rows_times_rows<D, kKeys>(p, q_tile, warp * 16, keys.k_tile(j), 0);
        rows_times_rows<D, kKeys>(dp, do_tile, warp * 16, keys.v_tile(j), 0);
        for (int nn = 0; nn < kKeys / 8; ++nn) {
            for (int e = 0; e < 4; ++e) {
                const int half = e / 2, key = key0 + nn * 8 + 2 * t + e % 2;
                const float prob = key <= at.last_key(half) ? exp2f(p[nn][e] * scale_log2 - row_lse[half]) : 0.0f;
                p[nn][e] = prob * (dp[nn][e] - row_delta[half]);  // dS
            }
        }
        probs_times_rows<D, kKeys>(acc, p, keys.k_tile(j));
        __syncthreads();
    }
    store_rows<D>(dq, acc, q_heads, at.head, tile.first + warp * 16, tile.q_end, scale);
}

template <int D>
__device__ void backward_dkdv(const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                              const __nv_bfloat16* __restrict__ v, const __nv_bfloat16* __restrict__ d_o,
                              const float* __restrict__ lse, const float* __restrict__ delta,
                              __nv_bfloat16* __restrict__ dk, __nv_bfloat16* __restrict__ dv_out,
                              const Tile* __restrict__ tiles, int q_tokens, int q_heads, int kv_heads, float scale_log2,
                              float scale) {
    DV_DYNAMIC_SHARED(__nv_bfloat16, shared);
    __nv_bfloat16* k_tile = shared;
    __nv_bfloat16* v_tile = shared + kRows * kStride<D>;
    __nv_bfloat16* qdo_tiles = shared + 2 * kRows * kStride<D>;
    auto q_tile = [&](int buffer) { return qdo_tiles + (2 * buffer) * kQueries * kStride<D>; };
    auto do_tile = [&](int buffer) { return qdo_tiles + (2 * buffer + 1) * kQueries * kStride<D>; };
    // Per buffer: the tile's queries' lse (log2 units) then their D.
    float* row_stats = reinterpret_cast<float*>(qdo_tiles + 4 * kQueries * kStride<D>);

    const Tile tile = tiles[blockIdx.x];
    const int kv_head = blockIdx.y, group = q_heads / kv_heads;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    // The first query that sees the tile's first key; none in a segment without queries.
    const int diagonal = tile.diagonal(), q_from = max(tile.q_start, tile.first - diagonal);
    const int query_tiles = (tile.q_end - q_from + kQueries - 1) / kQueries;
    const int steps = group * query_tiles;
    // Step s: query head kv_head * group + s / query_tiles, queries from q0(s).
    auto q0 = [&](int s) { return q_from + (s % query_tiles) * kQueries; };
    auto head_of = [&](int s) { return kv_head * group + s / query_tiles; };
    auto prefetch = [&](int s, int buffer) {
        load_rows<D>(q_tile(buffer), q, q_heads, head_of(s), q0(s), kQueries, tile.q_end);
        load_rows<D>(do_tile(buffer), d_o, q_heads, head_of(s), q0(s), kQueries, tile.q_end);
        for (int i = threadIdx.x; i < kQueries; i += blockDim.x) {
            const int row = q0(s) + i;
            const bool valid = row < tile.q_end;
            const size_t at = static_cast<size_t>(head_of(s)) * q_tokens + row;
            row_stats[buffer * 2 * kQueries + i] = valid ? lse[at] * kLog2e : 0.0f;
            row_stats[buffer * 2 * kQueries + kQueries + i] = valid ? delta[at] : 0.0f;
        }
    };

    if (steps > 0) {  // else a segment without queries: its keys' gradients are zeros
        load_rows<D>(k_tile, k, kv_heads, kv_head, tile.first, kRows, tile.k_end);
        load_rows<D>(v_tile, v, kv_heads, kv_head, tile.first, kRows, tile.k_end);
        prefetch(0, 0);
    }
    dv::cp_async_commit();
    // The first query that sees this thread's key row g (row g + 8's is 8 later). Rows
    // past the segment's keys need no mask: their K and V are zeros and never stored.
    const int first_query = tile.first + warp * 16 + g - diagonal;

    float acc_dk[D / 8][4] = {}, acc_dv[D / 8][4] = {};
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
        float p[kQueries / 8][4] = {}, dp[kQueries / 8][4] = {};
        rows_times_rows<D, kQueries>(p, k_tile, warp * 16, q_tile(buffer), 0);      // S^T
        rows_times_rows<D, kQueries>(dp, v_tile, warp * 16, do_tile(buffer), 0);    // dP^T
        for (int nn = 0; nn < kQueries / 8; ++nn) {
            for (int e = 0; e < 4; ++e) {
                const int column = nn * 8 + 2 * t + e % 2, query = step_first + column;
                const bool valid = query >= first_query + 8 * (e / 2) && query < tile.q_end;
                p[nn][e] = valid ? exp2f(p[nn][e] * scale_log2 - stats[column]) : 0.0f;
                dp[nn][e] = p[nn][e] * (dp[nn][e] - stats[kQueries + column]);  // dS^T
            }
        }
        probs_times_rows<D, kQueries>(acc_dv, p, do_tile(buffer));
        probs_times_rows<D, kQueries>(acc_dk, dp, q_tile(buffer));
        __syncthreads();
    }
    store_rows<D>(dk, acc_dk, kv_heads, kv_head, tile.first + warp * 16, tile.k_end, scale);
    store_rows<D>(dv_out, acc_dv, kv_heads, kv_head, tile.first + warp * 16, tile.k_end, 1.0f);
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
    extern "C" __global__ void flash_attention_fwd_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k,         \
                                                        const __nv_bfloat16* v, __nv_bfloat16* out, float* lse, \
                                                        const fa::Tile* tiles, int q_tokens, int q_heads,      \
                                                        int kv_heads, float scale_log2) {                      \
        fa::forward<D>(q, k, v, out, lse, tiles, q_tokens, q_heads, kv_heads, scale_log2);                     \
    }                                                                                                           \
    extern "C" __global__ void flash_attention_dq_d##D(                                                        \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* d_o,      \
        const float* lse, const float* delta, __nv_bfloat16* dq, const fa::Tile* tiles, int q_tokens,          \
        int q_heads, int kv_heads, float scale_log2, float scale) {                                            \
        fa::backward_dq<D>(q, k, v, d_o, lse, delta, dq, tiles, q_tokens, q_heads, kv_heads, scale_log2,       \
                           scale);                                                                              \
    }                                                                                                           \
    extern "C" __global__ void flash_attention_dkdv_d##D(                                                      \
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
