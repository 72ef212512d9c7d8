// Self-test kernels for the synchronisation wrappers of hopper.cuh: TMA tensor loads through
// mbarriers, a two-stage producer/consumer pipeline, reads that skip or misuse the wait, and
// named barriers. They hand shared memory back as raw bytes, so that tests can check where
// each element landed against the PTX ISA's swizzle tables. The tests run them under the
// emulation (crates/kernels/tests/tma.rs); the same kernels build for sm_90a, where all but
// `tma_early_read` and `tma_misuse` (which break the rules on purpose) hold the same results.
//
// Shared memory: the barriers in the first 128 bytes, tiles from a 128-byte boundary after
// them (1024 bytes in the pipeline, where the pattern of a 128-byte swizzle starts).
#include "hopper.cuh"

using dv::sm90::TensorMap;

// One box of `map` (rank 3) at (c0, c1, c2) into the shared memory at `tile_offset` (a
// multiple of 128, at least 128), counted on one barrier; `out` gets the tile's `bytes`
// bytes as shared memory holds them, `address[0]` the tile's shared address (the swizzle
// acts on it).
extern "C" __global__ void tma_box(const __grid_constant__ TensorMap map, int c0, int c1, int c2, int tile_offset,
                                   int bytes, unsigned char* out, unsigned* address) {
    DV_DYNAMIC_SHARED(unsigned char, shared);
    uint64_t* bar = reinterpret_cast<uint64_t*>(shared);
    unsigned char* tile = shared + tile_offset;
    if (threadIdx.x == 0) {
        dv::sm90::mbarrier_init(bar, 1);
        dv::sm90::fence_barrier_init();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        dv::sm90::mbarrier_arrive_expect_tx(bar, bytes);
        dv::sm90::tma_load_3d(tile, map, c0, c1, c2, bar);
    }
    dv::sm90::mbarrier_wait(bar, 0);
    for (int i = threadIdx.x; i < bytes; i += blockDim.x) out[i] = tile[i];
    if (threadIdx.x == 0) address[0] = dv::sm90::shared_address(tile);
}

// Two stages over `steps` steps of a [tokens, 2, 64] bf16 tensor whose map's box is 64 x 1 x
// `rows`: at step s the producer (thread 64) loads rows s * rows .. of head 0 and of head 1
// into stage s % 2, two copies on the stage's full barrier; on odd steps it issues them
// before its arrive.expect_tx (the CUDA Programming Guide's order). The consumers (threads
// 0-63) wait for the stage, copy it to out[s], and release it on its empty barrier. Block:
// 96 threads.
extern "C" __global__ void tma_pipeline(const __grid_constant__ TensorMap map, int rows, int steps,
                                        unsigned char* out) {
    DV_DYNAMIC_SHARED(unsigned char, shared);
    uint64_t* full = reinterpret_cast<uint64_t*>(shared);
    uint64_t* empty = full + 2;
    const int box = 64 * 2 * rows, stage_bytes = 2 * box;
    unsigned char* stages = shared + 1024;
    if (threadIdx.x == 0) {
        for (int s = 0; s < 2; ++s) {
            dv::sm90::mbarrier_init(&full[s], 1);
            dv::sm90::mbarrier_init(&empty[s], 64);
        }
        dv::sm90::fence_barrier_init();
    }
    __syncthreads();
    if (threadIdx.x < 64) {
        for (int step = 0; step < steps; ++step) {
            const int s = step % 2;
            dv::sm90::mbarrier_wait(&full[s], (step / 2) % 2);
            const unsigned char* stage = stages + s * stage_bytes;
            for (int i = threadIdx.x; i < stage_bytes; i += 64) out[step * stage_bytes + i] = stage[i];
            dv::sm90::mbarrier_arrive(&empty[s]);
        }
    } else if (threadIdx.x == 64) {
        for (int step = 0; step < steps; ++step) {
            const int s = step % 2;
            // Parity 1 on a fresh barrier returns at once: the stage starts free.
            dv::sm90::mbarrier_wait(&empty[s], (step / 2) % 2 ^ 1);
            unsigned char* stage = stages + s * stage_bytes;
            if (step % 2 == 0) dv::sm90::mbarrier_arrive_expect_tx(&full[s], stage_bytes);
            dv::sm90::tma_load_3d(stage, map, 0, 0, step * rows, &full[s]);
            dv::sm90::tma_load_3d(stage + box, map, 0, 1, step * rows, &full[s]);
            if (step % 2 == 1) dv::sm90::mbarrier_arrive_expect_tx(&full[s], stage_bytes);
        }
    }
}

// Reads the tile a copy (the box at the origin, `bytes` bytes) targets before waiting
// properly: `wrong_parity` 0, without any wait; 1, after a wait on parity 1, which returns
// at once while phase 0 is incomplete (the barrier counts two arrivals: the issuing
// thread's and the reader's, which comes after the read). `early` gets what the reader saw,
// `late` the tile after the wait on parity 0. Thread 0 issues, warp 1 reads. Block: 64
// threads. (On a GPU `early` holds whatever the copy had written by then.)
extern "C" __global__ void tma_early_read(const __grid_constant__ TensorMap map, int wrong_parity, int bytes,
                                          unsigned char* early, unsigned char* late) {
    DV_DYNAMIC_SHARED(unsigned char, shared);
    uint64_t* bar = reinterpret_cast<uint64_t*>(shared);
    unsigned char* tile = shared + 1024;
    if (threadIdx.x == 0) {
        dv::sm90::mbarrier_init(bar, wrong_parity ? 2 : 1);
        dv::sm90::fence_barrier_init();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        dv::sm90::mbarrier_arrive_expect_tx(bar, bytes);
        dv::sm90::tma_load_3d(tile, map, 0, 0, 0, bar);
    }
    __syncthreads();
    if (threadIdx.x >= 32) {
        const int lane = threadIdx.x - 32;
        if (wrong_parity) dv::sm90::mbarrier_wait(bar, 1);
        for (int i = lane; i < bytes; i += 32) early[i] = tile[i];
        __syncwarp();
        if (wrong_parity && lane == 0) dv::sm90::mbarrier_arrive(bar);
        dv::sm90::mbarrier_wait(bar, 0);
        for (int i = lane; i < bytes; i += 32) late[i] = tile[i];
    }
}

// Hands `rounds` values from threads 0-63 to threads 64-127 through a shared slot each:
// named barrier 1 says "written" (the writers arrive, the readers sync), barrier 2 "read"
// (the readers arrive, the writers sync before they write again). Reader t stores round r's
// value at out[(blockIdx.x * rounds + r) * 64 + t - 64]. Block: 128 threads; a grid of
// several blocks checks that each block starts with fresh barriers (the last round leaves
// barrier 2 half arrived).
extern "C" __global__ void named_handover(int rounds, int* out) {
    DV_DYNAMIC_SHARED(int, slots);
    const int t = threadIdx.x;
    for (int r = 0; r < rounds; ++r) {
        if (t < 64) {
            if (r > 0) dv::sm90::named_sync(2, 128);
            slots[t] = (static_cast<int>(blockIdx.x) * rounds + r) * 1000 + t;
            dv::sm90::named_arrive(1, 128);
        } else {
            dv::sm90::named_sync(1, 128);
            out[(blockIdx.x * rounds + r) * 64 + t - 64] = slots[t - 64];
            dv::sm90::named_arrive(2, 128);
        }
    }
}

// Breaks one rule, chosen by `what` (the Rust side's `Misuse`, in order), for the emulation
// to stop the process with a message; the tests run it in a child process. `map` is a rank-3
// map whose box is more than 16 bytes (zeros for case 4). Block: 64 threads.
extern "C" __global__ void tma_misuse(const __grid_constant__ TensorMap map, int what) {
    DV_DYNAMIC_SHARED(unsigned char, shared);
    uint64_t* bar = reinterpret_cast<uint64_t*>(shared);
    unsigned char* tile = shared + 1024;
    const int t = threadIdx.x;
    switch (what) {
        case 0:  // a wait on a barrier nobody initialised
            if (t == 0) dv::sm90::mbarrier_wait(bar, 0);
            break;
        case 1:  // init twice
            if (t == 0) {
                dv::sm90::mbarrier_init(bar, 1);
                dv::sm90::mbarrier_init(bar, 1);
            }
            break;
        case 2:  // a second arrival on a barrier of count 1, whose phase waits for bytes
            if (t == 0) {
                dv::sm90::mbarrier_init(bar, 1);
                dv::sm90::mbarrier_arrive_expect_tx(bar, 16);
                dv::sm90::mbarrier_arrive(bar);
            }
            break;
        case 3:  // a copy of more bytes than the phase announced, every arrival in
            if (t == 0) {
                dv::sm90::mbarrier_init(bar, 1);
                dv::sm90::mbarrier_arrive_expect_tx(bar, 16);
                dv::sm90::tma_load_3d(tile, map, 0, 0, 0, bar);
            }
            break;
        case 4:  // a map the emulation did not make (the caller passes zeros)
            if (t == 0) {
                dv::sm90::mbarrier_init(bar, 1);
                dv::sm90::tma_load_3d(tile, map, 0, 0, 0, bar);
            }
            break;
        case 5:  // a copy onto the barrier
            if (t == 0) {
                dv::sm90::mbarrier_init(bar, 1);
                dv::sm90::tma_load_3d(shared, map, 0, 0, 0, bar);
            }
            break;
        case 6:  // shared data written over a barrier
            if (t == 0) {
                dv::sm90::mbarrier_init(bar, 1);
                *bar = 0;
                dv::sm90::mbarrier_arrive(bar);
            }
            break;
        case 7:  // a named barrier over 48 threads
            dv::sm90::named_sync(1, 48);
            break;
        case 8:  // half of each warp at a named barrier of 32
            if (t % 32 < 16) dv::sm90::named_sync(1, 32);
            break;
        case 9:  // bar.arrive, then bar.sync on the same barrier before it completes
            if (t < 32) {
                dv::sm90::named_arrive(1, 64);
                dv::sm90::named_sync(1, 64);
            }
            break;
        default:
            break;
    }
}

DV_EMULATION_TABLE(tma_selftest_sm90, DV_EMULATED(tma_box), DV_EMULATED(tma_pipeline), DV_EMULATED(tma_early_read),
                   DV_EMULATED(named_handover), DV_EMULATED(tma_misuse))
