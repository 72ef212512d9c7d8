// Flash attention for Hopper (sm_90a): the same contract as kernels/flash_attention.cu
// (packed variable-length segments, causal with flash-attn's bottom-right alignment, GQA,
// bf16 in, f32 accumulation, head_dim 64 or 128, query sub-ranges for context
// parallelism, the log-sum-exp kept for the backward), built on what only Hopper has, as
// FlashAttention-3 is: warpgroup matrix products (wgmma) reading their operands from
// shared memory through descriptors, tiles brought by TMA into 128-byte-swizzled shared
// memory through an mbarrier pipeline, and warp specialisation. kernels/hopper.cuh wraps
// the instructions and says where the PTX ISA defines them.
//
// Forward: a block per (128 query rows, head) of 3 warpgroups (384 threads).
//   producer   warpgroup 0 gives its registers back (setmaxnreg 24) and one thread issues
//              every copy: Q once, then K_j and V_j into one of 3 stages, each stage's K
//              and V on their own "full" barrier (so S = Q K_j^T starts before V_j lands)
//              and reused when the consumers' 8 warps arrive on its "empty" barrier.
//   consumers  warpgroups 1 and 2 (setmaxnreg 240) own 64 query rows each. Per key tile
//              of 128: S (64 x 128, 64 f32 a thread) = Q K^T by D/16 wgmma m64n128k16
//              from shared memory (both K-major); the online softmax in registers (base 2,
//              the scale folded into one FFMA before ex2.approx, masked only on tiles
//              crossing the diagonal); P rounded to bf16 in registers becomes the A
//              operand of O (64 x D) += P V: 8 wgmma m64nDk16 with V as an MN-major B.
//              Within a consumer, S_j is issued, then O += P_{j-1} V_{j-1} behind it,
//              and the softmax of S_j runs while that second product does (O is
//              rescaled once it is in); across consumers, they take turns issuing S
//              (named barriers 1 and 2), so one's softmax also runs under the other's
//              products.
// Shared memory: tiles are [D / 64 spans][rows][64 bf16], each row one 128-byte swizzle
// row, the layout TMA writes with CU_TENSOR_MAP_SWIZZLE_128B and wgmma reads through a
// descriptor with the 128-byte swizzle (8-row groups 1024 bytes apart; a k16 step inside
// a span is a 32-byte advance of the start address). Q 16/32 KB, 3 stages of K and V
// 96/192 KB at D = 64/128 (a stage stays held while the next tile's softmax runs).
//
// Backward: a block per (128 key rows, kv head) of 3 warpgroups, each consumer 64 key rows
// with dK and dV in registers, over the group's query heads in steps of 64 queries (Q and
// dO in 2 stages); each step's share of dQ is added into an f32 sum in global memory in the
// key tile's turn (see BackwardWalk), so the sum is the same on every run.
// Rows past a segment's end (the next segment's, or zeros past the tensor) are computed
// and never stored; keys past it are past every stored row's diagonal, so masked.
// Deterministic: every sum runs in a fixed order inside one warpgroup.
#include "attention_tiles.cuh"
#include "hopper.cuh"

namespace fa3 {

using dv::sm90::Swizzle;
using dv::sm90::TensorMap;
using fa::Tile;

constexpr int kThreads = 384;      // a producer warpgroup and two consumer warpgroups
constexpr int kQueryRows = 128;    // query rows per forward block: 64 per consumer
constexpr int kKeys = 128;         // keys per stage
constexpr int kForwardStages = 3;   // stages of K and V in the forward: the softmax of one tile
                                     // overlaps a product, so a stage is held longer
constexpr int kBackwardStages = 2;  // stages of Q and dO in the backward
constexpr int kSpan = 64;          // bf16 in a 128-byte swizzle row: a TMA box's width
constexpr int kRowBytes = 128;
constexpr int kGroupBytes = 8 * kRowBytes;  // a swizzle pattern: 8 rows
constexpr int kConsumerWarps = 8;
constexpr int kFirstTurn = 1;      // named barriers 1 and 2: the consumers' turns
constexpr int kConsumerThreads = 256;

/// Byte offsets of the forward's shared memory: Q, the stages of K and of V, then the
/// barriers (Q's, and each stage's K full, V full and empty).
template <int D>
struct ForwardShared {
    static constexpr int kQBytes = kQueryRows * D * 2;
    static constexpr int kStageBytes = kKeys * D * 2;
    static constexpr int kQ = 0;
    static constexpr int kK = kQ + kQBytes;
    static constexpr int kV = kK + kForwardStages * kStageBytes;
    static constexpr int kBarriers = kV + kForwardStages * kStageBytes;
    static constexpr int kBytes = kBarriers + 8 * (1 + 3 * kForwardStages);
    static_assert(kQ % 1024 == 0 && kK % 1024 == 0 && kV % 1024 == 0, "tiles on swizzle patterns");
};

/// Copies `rows` rows of one head from `first` (all D columns, a box per 64-column span)
/// into a [span][rows][64] tile, counting the bytes on `barrier`.
template <int D, int Rows>
__device__ __forceinline__ void copy_rows(unsigned char* tile, const TensorMap& map, int head, int first,
                                          uint64_t* barrier) {
    dv::sm90::mbarrier_arrive_expect_tx(barrier, Rows * D * 2);
#pragma unroll
    for (int span = 0; span < D / kSpan; ++span) {
        dv::sm90::tma_load_3d(tile + span * Rows * kRowBytes, map, span * kSpan, head, first, barrier);
    }
}

/// The descriptor of rows row0.. of a [span][rows][64] tile as a K-major operand (the K
/// dimension along the rows' D columns), at its first k16 step.
__device__ __forceinline__ uint64_t k_major(const unsigned char* tile, int row0) {
    return dv::sm90::descriptor(tile + row0 * kRowBytes, 16, kGroupBytes, Swizzle::k128);
}

/// k16 step `kk` of a K-major descriptor from `k_major`: 32 bytes into the span, or the
/// next span.
template <int Rows>
__device__ __forceinline__ uint64_t k_step(uint64_t descriptor, int kk) {
    return dv::sm90::advance(descriptor, (kk / 4) * Rows * kRowBytes + (kk % 4) * 32);
}

/// The descriptor of a [span][Rows][64] tile as an MN-major B operand (K along the rows,
/// N along the D columns): spans `Rows` rows apart, 8-row groups a pattern apart.
template <int Rows>
__device__ __forceinline__ uint64_t mn_major(const unsigned char* tile) {
    return dv::sm90::descriptor(tile, Rows * kRowBytes, kGroupBytes, Swizzle::k128);
}

/// The producer: one thread brings Q, then every key tile's K and V into the stages.
template <int D>
__device__ void produce(unsigned char* shared, const TensorMap& q_map, const TensorMap& k_map,
                        const TensorMap& v_map, const Tile& tile, int head, int kv_head, int count) {
    using S = ForwardShared<D>;
    uint64_t* barriers = reinterpret_cast<uint64_t*>(shared + S::kBarriers);
    uint64_t *k_full = barriers + 1, *v_full = k_full + kForwardStages, *empty = v_full + kForwardStages;
    copy_rows<D, kQueryRows>(shared + S::kQ, q_map, head, tile.first, barriers);
    for (int j = 0; j < count; ++j) {
        const int stage = j % kForwardStages, key0 = tile.k_start + j * kKeys;
        if (j >= kForwardStages) dv::sm90::mbarrier_wait(empty + stage, (j / kForwardStages - 1) & 1);
        copy_rows<D, kKeys>(shared + S::kK + stage * S::kStageBytes, k_map, kv_head, key0, k_full + stage);
        copy_rows<D, kKeys>(shared + S::kV + stage * S::kStageBytes, v_map, kv_head, key0, v_full + stage);
    }
}

/// A warp's 16 x N accumulator fragments (f32) as the bf16 A fragments of N / 16 k16
/// steps: P as the A operand of P V (and P^T, dS^T in the backward).
template <int N>
__device__ __forceinline__ void accumulators_as_a(uint32_t (&a)[N / 16][4], const float (&p)[N / 8][4]) {
#pragma unroll
    for (int kk = 0; kk < N / 16; ++kk) {
        a[kk][0] = dv::pack_bf16(p[2 * kk][0], p[2 * kk][1]);
        a[kk][1] = dv::pack_bf16(p[2 * kk][2], p[2 * kk][3]);
        a[kk][2] = dv::pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        a[kk][3] = dv::pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
    }
}

/// A consumer warpgroup: 64 query rows against every key tile, then O and the lse. The
/// products of one warpgroup overlap its own softmax as FlashAttention-3's do: S_j = Q K_j^T
/// is issued, then O += P_{j-1} V_{j-1} behind it, and the softmax of S_j runs while that
/// second product does; O is rescaled once it is in.
template <int D>
__device__ void consume(unsigned char* shared, __nv_bfloat16* __restrict__ out, float* __restrict__ lse,
                        const Tile& tile, int head, int q_tokens, int q_heads, int count, float scale_log2) {
    using S = ForwardShared<D>;
    uint64_t* barriers = reinterpret_cast<uint64_t*>(shared + S::kBarriers);
    uint64_t *k_full = barriers + 1, *v_full = k_full + kForwardStages, *empty = v_full + kForwardStages;
    const int consumer = threadIdx.x / 128 - 1, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
    const int g = lane / 4;
    const int row0 = tile.first + 64 * consumer + 16 * warp;  // the warp's first row
    const uint64_t q_desc = k_major(shared + S::kQ, 64 * consumer);

    float o[D / 8][4] = {}, s[kKeys / 8][4];
    uint32_t p[kKeys / 16][4];
    float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f}, rescale[2];

    // S_j = Q K_j^T, issued in this consumer's turn, which then passes to the other.
    auto issue_scores = [&](int j) {
        const int stage = j % kForwardStages;
        dv::sm90::mbarrier_wait(k_full + stage, (j / kForwardStages) & 1);
        dv::sm90::named_sync(kFirstTurn + consumer, kConsumerThreads);
        const uint64_t k_desc = k_major(shared + S::kK + stage * S::kStageBytes, 0);
        dv::sm90::wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            dv::sm90::wgmma_ss<kKeys, 0, 0>(&s[0][0], k_step<kQueryRows>(q_desc, kk), k_step<kKeys>(k_desc, kk),
                                            kk > 0);
        }
        dv::sm90::wgmma_commit();
        // Consumer 1's last turn has no one waiting for it.
        if (consumer == 0 || j + 1 < count) dv::sm90::named_arrive(kFirstTurn + 1 - consumer, kConsumerThreads);
    };
    // O += P_j V_j, P from registers.
    auto issue_values = [&](int j) {
        const int stage = j % kForwardStages;
        dv::sm90::mbarrier_wait(v_full + stage, (j / kForwardStages) & 1);
        const uint64_t v_desc = mn_major<kKeys>(shared + S::kV + stage * S::kStageBytes);
        dv::sm90::wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kKeys / 16; ++kk) {
            dv::sm90::wgmma_rs<D, 1>(&o[0][0], p[kk], dv::sm90::advance(v_desc, kk * 2 * kGroupBytes), true);
        }
        dv::sm90::wgmma_commit();
    };
    // The online softmax of S_j: the new maxima, P_j (f32, over S_j) and the row sums, and
    // in `rescale` the factor O must still be multiplied by.
    auto softmax = [&](int j) {
        const int key0 = tile.k_start + j * kKeys;
        const bool masked = tile.crosses_diagonal(key0, kKeys);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int last_key = tile.last_key(row0 + g + 8 * half);
            rescale[half] =
                fa::softmax_row<kKeys>(s, half, key0, last_key, masked, scale_log2, row_max[half], row_sum[half]);
        }
    };
    auto release = [&](int j) {
        if (lane == 0) dv::sm90::mbarrier_arrive(empty + j % kForwardStages);  // this warp is done with K_j and V_j
    };

    dv::sm90::mbarrier_wait(barriers, 0);  // Q
    if (consumer == 1) dv::sm90::named_arrive(kFirstTurn, kConsumerThreads);  // consumer 0 goes first
    issue_scores(0);
    dv::sm90::wgmma_wait<0>();
    softmax(0);  // O is zeros yet: nothing to rescale
    accumulators_as_a<kKeys>(p, s);
    for (int j = 1; j < count; ++j) {
        issue_scores(j);
        issue_values(j - 1);
        dv::sm90::wgmma_wait<1>();  // S_j is in; P_{j-1} V_{j-1} may still run
        softmax(j);
        dv::sm90::wgmma_wait<0>();
        release(j - 1);
        fa::scale_row<D>(o, 0, rescale[0]);
        fa::scale_row<D>(o, 1, rescale[1]);
        accumulators_as_a<kKeys>(p, s);
    }
    issue_values(count - 1);
    dv::sm90::wgmma_wait<0>();
    release(count - 1);

#pragma unroll
    for (int half = 0; half < 2; ++half) {
        fa::finish_row<D>(o, half, row_max[half], row_sum[half], scale_log2, row0 + g + 8 * half, tile.q_end,
                          lse + static_cast<size_t>(head) * q_tokens);
    }
    fa::store_rows<D>(out, o, q_heads, head, row0, tile.q_end, 1.0f);
}

/// The forward: barriers set up by one thread, then the warpgroups split.
template <int D>
__device__ void forward(const TensorMap& q_map, const TensorMap& k_map, const TensorMap& v_map,
                        __nv_bfloat16* __restrict__ out, float* __restrict__ lse, const Tile* __restrict__ tiles,
                        int q_tokens, int q_heads, int kv_heads, float scale_log2) {
    using S = ForwardShared<D>;
    DV_DYNAMIC_SHARED_ALIGNED(unsigned char, shared, 1024);  // swizzle and descriptors act on address bits
    uint64_t* barriers = reinterpret_cast<uint64_t*>(shared + S::kBarriers);
    const Tile tile = tiles[blockIdx.x];
    const int head = blockIdx.y, kv_head = head / (q_heads / kv_heads);
    const int count = tile.key_tiles(kQueryRows, kKeys);
    if (threadIdx.x == 0) {
        dv::sm90::mbarrier_init(barriers, 1);
        for (int stage = 0; stage < kForwardStages; ++stage) {
            dv::sm90::mbarrier_init(barriers + 1 + stage, 1);
            dv::sm90::mbarrier_init(barriers + 1 + kForwardStages + stage, 1);
            dv::sm90::mbarrier_init(barriers + 1 + 2 * kForwardStages + stage, kConsumerWarps);
        }
        dv::sm90::fence_barrier_init();
    }
    __syncthreads();
    if (threadIdx.x < 128) {
        dv::sm90::registers_down<24>();
        if (threadIdx.x == 0) produce<D>(shared, q_map, k_map, v_map, tile, head, kv_head, count);
    } else {
        dv::sm90::registers_up<240>();
        consume<D>(shared, out, lse, tile, head, q_tokens, q_heads, count, scale_log2);
    }
}

constexpr int kKeyRows = 128;      // keys per backward block: 64 per consumer
constexpr int kStepQueries = 64;   // queries per backward step
constexpr int kDsReady = 1;        // named barrier: both halves of dS^T are in shared memory
constexpr int kDqTurn = 2;         // named barrier: the block's turn to add into a dQ tile

/// Byte offsets of the backward's shared memory: K and V (the block's keys), the stages
/// of Q and dO, dS^T ([128 keys][64 queries], one swizzle row a key), two buffers of the
/// step's lse (base 2) and D, then the barriers (K and V's, and each stage's full and empty).
template <int D>
struct BackwardShared {
    static constexpr int kKvBytes = kKeyRows * D * 2;
    static constexpr int kStepBytes = kStepQueries * D * 2;
    static constexpr int kK = 0;
    static constexpr int kV = kK + kKvBytes;
    static constexpr int kQ = kV + kKvBytes;
    static constexpr int kDo = kQ + kBackwardStages * kStepBytes;
    static constexpr int kDs = kDo + kBackwardStages * kStepBytes;
    static constexpr int kStats = kDs + kKeyRows * kStepQueries * 2;  // [2][lse 64, D 64] f32
    static constexpr int kBarriers = kStats + 2 * 2 * kStepQueries * 4;
    static constexpr int kBytes = kBarriers + 8 * (1 + 2 * kBackwardStages);
    static_assert(kV % 1024 == 0 && kQ % 1024 == 0 && kDo % 1024 == 0 && kDs % 1024 == 0, "tile alignment");
};

/// The backward's walk over one key tile's queries: the group's query heads, each over
/// the 64-row query tiles of the segment from the one holding the first query that sees
/// the tile's first key. Query tiles are aligned on the segment's first query, so every
/// key tile of a segment adds into the same dQ tiles, and key tile j is the j-th to add.
struct BackwardWalk {
    Tile tile;
    int kv_head, group, first_tile, tiles_per_head, steps, turn;
    __device__ BackwardWalk(const Tile& t, int kv_head_, int q_heads, int kv_heads)
        : tile(t), kv_head(kv_head_), group(q_heads / kv_heads) {
        const int q_from = tile.first_query();
        first_tile = (q_from - tile.q_start) / kStepQueries;
        tiles_per_head = q_from < tile.q_end ? (tile.q_end - tile.q_start + kStepQueries - 1) / kStepQueries - first_tile : 0;
        steps = group * tiles_per_head;
        turn = (tile.first - tile.k_start) / kKeyRows;
    }
    __device__ int first_query(int step) const {
        return tile.q_start + (first_tile + step % tiles_per_head) * kStepQueries;
    }
    __device__ int head(int step) const { return kv_head * group + step / tiles_per_head; }
};

/// The backward's producer: K and V once, then each step's Q and dO into the stages.
template <int D>
__device__ void produce_backward(unsigned char* shared, const TensorMap& q_map, const TensorMap& k_map,
                                 const TensorMap& v_map, const TensorMap& do_map, const BackwardWalk& walk) {
    using S = BackwardShared<D>;
    uint64_t* barriers = reinterpret_cast<uint64_t*>(shared + S::kBarriers);
    uint64_t *full = barriers + 1, *empty = full + kBackwardStages;
    copy_rows<D, kKeyRows>(shared + S::kK, k_map, walk.kv_head, walk.tile.first, barriers);
    copy_rows<D, kKeyRows>(shared + S::kV, v_map, walk.kv_head, walk.tile.first, barriers);
    for (int s = 0; s < walk.steps; ++s) {
        const int stage = s % kBackwardStages, head = walk.head(s), q0 = walk.first_query(s);
        if (s >= kBackwardStages) dv::sm90::mbarrier_wait(empty + stage, (s / kBackwardStages - 1) & 1);
        copy_rows<D, kStepQueries>(shared + S::kQ + stage * S::kStepBytes, q_map, head, q0, full + stage);
        copy_rows<D, kStepQueries>(shared + S::kDo + stage * S::kStepBytes, do_map, head, q0, full + stage);
    }
}

/// Stores a warp's 16 x 64 dS^T fragments (bf16) as rows `row0`.. of the swizzled
/// [128 keys][64 queries] tile that dQ's product reads as an M-major A.
__device__ __forceinline__ void store_ds(unsigned char* tile, const float (&ds)[kStepQueries / 8][4], int row0) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int row = row0 + g + 8 * half;
#pragma unroll
        for (int nn = 0; nn < kStepQueries / 8; ++nn) {
            const int chunk = nn ^ (row % 8);
            dv::sm90::store_for_async(tile + row * kRowBytes + chunk * 16 + 4 * t,
                                      dv::pack_bf16(ds[nn][2 * half], ds[nn][2 * half + 1]));
        }
    }
}

/// A backward consumer warpgroup: dK and dV of its 64 keys in registers over every step;
/// each step's share of dQ (its half of the columns) added into the f32 sum in the key
/// tile's turn.
template <int D>
__device__ void consume_backward(unsigned char* shared, const float* __restrict__ lse,
                                 const float* __restrict__ delta, float* __restrict__ dq_sum, int* __restrict__ dq_turns,
                                 __nv_bfloat16* __restrict__ dk_out, __nv_bfloat16* __restrict__ dv_out,
                                 const BackwardWalk& walk, int q_tokens, int q_heads, int kv_heads, float scale_log2,
                                 float scale) {
    using S = BackwardShared<D>;
    uint64_t* barriers = reinterpret_cast<uint64_t*>(shared + S::kBarriers);
    uint64_t *full = barriers + 1, *empty = full + kBackwardStages;
    const Tile& tile = walk.tile;
    const int consumer = threadIdx.x / 128 - 1, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4, diagonal = tile.diagonal();
    const int key0 = 64 * consumer + 16 * warp;  // the warp's first key row in the tile
    // The first query that sees this thread's key rows g and g + 8.
    const int first_seeing[2] = {tile.first + key0 + g - diagonal, tile.first + key0 + g + 8 - diagonal};
    // The consumer's 64 key rows as A (a warpgroup's operand starts at its first row).
    const uint64_t k_desc = k_major(shared + S::kK, 64 * consumer);
    const uint64_t v_desc = k_major(shared + S::kV, 64 * consumer);
    // dQ's B: K as an N-major operand, this consumer's half of the columns.
    const uint64_t k_columns = dv::sm90::advance(mn_major<kKeyRows>(shared + S::kK),
                                                 D == 128 ? consumer * kKeyRows * kRowBytes : consumer * 64);
    const uint64_t ds_desc = dv::sm90::descriptor(shared + S::kDs, 16, kGroupBytes, Swizzle::k128);

    // Each step's lse (base 2) and D go through shared memory, a step ahead: consumer 0's
    // first 64 threads bring the lse, consumer 1's the D, one each, so that no thread holds
    // its 32 columns' values in registers. Queries past the segment get an infinite lse
    // (and D 0): their probabilities are zeros without a mask.
    float* stats = reinterpret_cast<float*>(shared + S::kStats);
    const int stat = threadIdx.x % 128;
    auto fetch_stat = [&](int step) {
        const int query = walk.first_query(step) + stat;
        const size_t at = static_cast<size_t>(walk.head(step)) * q_tokens + query;
        if (stat >= kStepQueries) return 0.0f;
        if (query >= tile.q_end) return consumer == 0 ? INFINITY : 0.0f;
        return consumer == 0 ? lse[at] * fa::kLog2e : delta[at];
    };
    auto keep_stat = [&](int buffer, float value) {
        if (stat < kStepQueries) stats[buffer * 2 * kStepQueries + consumer * kStepQueries + stat] = value;
    };
    keep_stat(0, fetch_stat(0));
    dv::sm90::named_sync(kDsReady, kConsumerThreads);

    float dk[D / 8][4] = {}, dv[D / 8][4] = {};
    dv::sm90::mbarrier_wait(barriers, 0);  // K and V
    for (int s = 0; s < walk.steps; ++s) {
        const int stage = s % kBackwardStages, head = walk.head(s), q0 = walk.first_query(s);
        const unsigned phase = (s / kBackwardStages) & 1;
        const unsigned char* q_tile = shared + S::kQ + stage * S::kStepBytes;
        const unsigned char* do_tile = shared + S::kDo + stage * S::kStepBytes;

        dv::sm90::mbarrier_wait(full + stage, phase);
        float st[kStepQueries / 8][4], dpt[kStepQueries / 8][4];
        const uint64_t q_desc = k_major(q_tile, 0), do_desc = k_major(do_tile, 0);
        dv::sm90::wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            dv::sm90::wgmma_ss<kStepQueries, 0, 0>(&st[0][0], k_step<kKeyRows>(k_desc, kk),
                                                   k_step<kStepQueries>(q_desc, kk), kk > 0);
        }
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            dv::sm90::wgmma_ss<kStepQueries, 0, 0>(&dpt[0][0], k_step<kKeyRows>(v_desc, kk),
                                                   k_step<kStepQueries>(do_desc, kk), kk > 0);
        }
        dv::sm90::wgmma_commit();
        const float next = s + 1 < walk.steps ? fetch_stat(s + 1) : 0.0f;  // in flight under the products
        dv::sm90::wgmma_wait<0>();
        if (s + 1 < walk.steps) keep_stat((s + 1) % 2, next);
        const float* column_lse = stats + (s % 2) * 2 * kStepQueries;
        const float* column_delta = column_lse + kStepQueries;

        // Masked only where some key row of the tile does not see the step's first query.
        const bool masked = q0 < tile.first + kKeyRows - 1 - diagonal;
#pragma unroll
        for (int nn = 0; nn < kStepQueries / 8; ++nn) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int half = e / 2, i = e % 2, query = q0 + nn * 8 + 2 * t + i;
                const int column = nn * 8 + 2 * t + i;
                float prob = dv::fast_exp2(fmaf(st[nn][e], scale_log2, -column_lse[column]));
                if (masked && query < first_seeing[half]) prob = 0.0f;
                st[nn][e] = prob;                                          // P^T
                dpt[nn][e] = prob * (dpt[nn][e] - column_delta[column]);  // dS^T
            }
        }
        uint32_t p_a[kStepQueries / 16][4], ds_a[kStepQueries / 16][4];
        accumulators_as_a<kStepQueries>(p_a, st);
        accumulators_as_a<kStepQueries>(ds_a, dpt);
        store_ds(shared + S::kDs, dpt, key0);
        dv::sm90::fence_proxy_async();  // the generic stores before the async proxy's reads

        // dV += P^T dO and dK += dS^T Q: A from registers, B N-major (K along the queries).
        const uint64_t do_columns = mn_major<kStepQueries>(do_tile), q_columns = mn_major<kStepQueries>(q_tile);
        dv::sm90::wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kStepQueries / 16; ++kk) {
            dv::sm90::wgmma_rs<D, 1>(&dv[0][0], p_a[kk], dv::sm90::advance(do_columns, kk * 2 * kGroupBytes), true);
        }
#pragma unroll
        for (int kk = 0; kk < kStepQueries / 16; ++kk) {
            dv::sm90::wgmma_rs<D, 1>(&dk[0][0], ds_a[kk], dv::sm90::advance(q_columns, kk * 2 * kGroupBytes), true);
        }
        dv::sm90::wgmma_commit();

        // dQ (64 queries x this consumer's D / 2 columns) = dS K over the tile's 128 keys:
        // dS^T read as an M-major A, K as an N-major B.
        dv::sm90::named_sync(kDsReady, kConsumerThreads);  // and the next step's lse and D are kept
        float dq[D / 16][4];
#pragma unroll
        for (int kk = 0; kk < kKeyRows / 16; ++kk) {
            dv::sm90::wgmma_ss<D / 2, 1, 1>(&dq[0][0], dv::sm90::advance(ds_desc, kk * 2 * kGroupBytes),
                                            dv::sm90::advance(k_columns, kk * 2 * kGroupBytes), kk > 0);
        }
        dv::sm90::wgmma_commit();
        dv::sm90::wgmma_wait<0>();
        if (lane == 0) dv::sm90::mbarrier_arrive(empty + stage);  // this warp is done with Q and dO

        // The tile's turn: key tile j adds after key tiles 0..j-1 of its segment, so the sum
        // is the same on every run.
        int* turns = dq_turns + static_cast<size_t>(head) * q_tokens + q0;
        if (threadIdx.x == 128) dv::sm90::wait_for_count(turns, walk.turn);
        dv::sm90::named_sync(kDqTurn, kConsumerThreads);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int query = q0 + 16 * warp + g + 8 * half;
            if (query >= tile.q_end) continue;
            float* row = dq_sum + (static_cast<size_t>(query) * q_heads + head) * D + consumer * (D / 2) + 2 * t;
#pragma unroll
            for (int nn = 0; nn < D / 16; ++nn) {
                row[nn * 8] += dq[nn][2 * half];
                row[nn * 8 + 1] += dq[nn][2 * half + 1];
            }
        }
        dv::sm90::named_sync(kDqTurn, kConsumerThreads);  // every add is in, and dS^T is free again
        if (threadIdx.x == 128) {
            dv::sm90::fence_gpu();
            dv::sm90::increment_release(turns);
        }
    }
    fa::store_rows<D>(dk_out, dk, kv_heads, walk.kv_head, tile.first + key0, tile.k_end, scale);
    fa::store_rows<D>(dv_out, dv, kv_heads, walk.kv_head, tile.first + key0, tile.k_end, 1.0f);
}

/// dK, dV and the f32 sum of dQ: a block per (128 key rows, kv head). `dq_turns` holds a
/// counter per (head, query) and, after them, the counter blocks take their work from.
template <int D>
__device__ void backward(const TensorMap& q_map, const TensorMap& k_map, const TensorMap& v_map,
                         const TensorMap& do_map, const float* __restrict__ lse, const float* __restrict__ delta,
                         float* __restrict__ dq_sum, int* __restrict__ dq_turns, __nv_bfloat16* __restrict__ dk,
                         __nv_bfloat16* __restrict__ dv_out, const Tile* __restrict__ tiles, int q_tokens, int q_heads,
                         int kv_heads, float scale_log2, float scale) {
    using S = BackwardShared<D>;
    DV_DYNAMIC_SHARED_ALIGNED(unsigned char, shared, 1024);  // swizzle and descriptors act on address bits
    uint64_t* barriers = reinterpret_cast<uint64_t*>(shared + S::kBarriers);
    // The block's (key tile, kv head) comes from a counter, not from blockIdx: a block waits
    // only for the turns of lower-numbered work, which blocks already running hold, so the
    // dQ turns cannot deadlock whatever order the hardware starts blocks in. The word goes
    // through the stats' place, which nothing writes before the __syncthreads below.
    int* work_slot = reinterpret_cast<int*>(shared + S::kStats);
    if (threadIdx.x == 0) *work_slot = dv::sm90::take_work(dq_turns + static_cast<size_t>(q_heads) * q_tokens);
    __syncthreads();
    const int work = *work_slot;
    const BackwardWalk walk(tiles[work % gridDim.x], work / gridDim.x, q_heads, kv_heads);
    if (walk.steps == 0) {  // a segment without queries: its keys' gradients are zeros
        if (threadIdx.x >= 128) {
            const float zeros[D / 8][4] = {};
            const int row0 = walk.tile.first + (threadIdx.x - 128) / 32 * 16;
            fa::store_rows<D>(dk, zeros, kv_heads, walk.kv_head, row0, walk.tile.k_end, 1.0f);
            fa::store_rows<D>(dv_out, zeros, kv_heads, walk.kv_head, row0, walk.tile.k_end, 1.0f);
        }
        return;
    }
    if (threadIdx.x == 0) {
        dv::sm90::mbarrier_init(barriers, 2);  // K's and V's copies
        for (int stage = 0; stage < kBackwardStages; ++stage) {
            dv::sm90::mbarrier_init(barriers + 1 + stage, 2);  // Q's and dO's
            dv::sm90::mbarrier_init(barriers + 1 + kBackwardStages + stage, kConsumerWarps);
        }
        dv::sm90::fence_barrier_init();
    }
    __syncthreads();
    if (threadIdx.x < 128) {
        dv::sm90::registers_down<24>();
        if (threadIdx.x == 0) produce_backward<D>(shared, q_map, k_map, v_map, do_map, walk);
    } else {
        dv::sm90::registers_up<240>();
        consume_backward<D>(shared, lse, delta, dq_sum, dq_turns, dk, dv_out, walk, q_tokens, q_heads, kv_heads,
                            scale_log2, scale);
    }
}

}  // namespace fa3

/// Zeros the f32 sum of dQ and the counters (the turns and the work counter) before the
/// backward.
extern "C" __global__ void flash_attention_clear_sm90(float* dq_sum, size_t elements, int* turns, size_t counters) {
    const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
    for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < elements; i += stride) dq_sum[i] = 0.0f;
    for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < counters; i += stride) turns[i] = 0;
}

/// dQ = scale x its f32 sum, as bf16.
extern "C" __global__ void flash_attention_dq_sm90(const float* dq_sum, __nv_bfloat16* dq, size_t elements, float scale) {
    const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
    for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < elements; i += stride) {
        dq[i] = __float2bfloat16(dq_sum[i] * scale);
    }
}

#define FLASH_ATTENTION_SM90_KERNELS(D)                                                                           \
    extern "C" __global__ void __launch_bounds__(fa3::kThreads, 1) flash_attention_fwd_sm90_d##D(                  \
        const __grid_constant__ dv::sm90::TensorMap q_map, const __grid_constant__ dv::sm90::TensorMap k_map,     \
        const __grid_constant__ dv::sm90::TensorMap v_map, __nv_bfloat16* out, float* lse, const fa::Tile* tiles, \
        int q_tokens, int q_heads, int kv_heads, float scale_log2) {                                              \
        fa3::forward<D>(q_map, k_map, v_map, out, lse, tiles, q_tokens, q_heads, kv_heads, scale_log2);          \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(fa3::kThreads, 1) flash_attention_bwd_sm90_d##D(                  \
        const __grid_constant__ dv::sm90::TensorMap q_map, const __grid_constant__ dv::sm90::TensorMap k_map,     \
        const __grid_constant__ dv::sm90::TensorMap v_map, const __grid_constant__ dv::sm90::TensorMap do_map,    \
        const float* lse, const float* delta, float* dq_sum, int* dq_turns, __nv_bfloat16* dk, __nv_bfloat16* dv, \
        const fa::Tile* tiles, int q_tokens, int q_heads, int kv_heads, float scale_log2, float scale) {          \
        fa3::backward<D>(q_map, k_map, v_map, do_map, lse, delta, dq_sum, dq_turns, dk, dv, tiles, q_tokens,      \
                         q_heads, kv_heads, scale_log2, scale);                                                   \
    }
FLASH_ATTENTION_SM90_KERNELS(64)
FLASH_ATTENTION_SM90_KERNELS(128)

DV_EMULATION_TABLE(flash_attention_sm90, DV_EMULATED(flash_attention_fwd_sm90_d64),
                   DV_EMULATED(flash_attention_fwd_sm90_d128), DV_EMULATED(flash_attention_bwd_sm90_d64),
                   DV_EMULATED(flash_attention_bwd_sm90_d128), DV_EMULATED(flash_attention_clear_sm90),
                   DV_EMULATED(flash_attention_dq_sm90))
