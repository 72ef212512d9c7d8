// Hopper's asynchronous instructions, each in one place: inline PTX on the device (sm_90a),
// and under DAVINCI_EMULATE a host emulation (kernels/emu/hopper.h) that follows the PTX
// ISA's definitions, including the asynchrony a kernel must wait for:
//   wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 (section 9.7.15, "Asynchronous
//     Warpgroup Level Matrix Multiply-Accumulate"): a warpgroup (4 consecutive warps, 128
//     threads) computes D (64 x N, f32) += A (64 x 16) B (16 x N). A comes from shared memory
//     through a matrix descriptor, or from registers; B from shared memory. The result lands
//     in the registers only at wgmma.wait_group: the emulation writes NaN into them at issue,
//     so a kernel reading them before the wait fails its tests.
//   Matrix descriptors (section 9.7.15.5.1.2): start address, leading and stride byte
//     offsets, and the swizzle mode (none, 32, 64, 128 bytes), all of shared memory.
//   mbarrier (section 9.7.13.15): arrive, expect-tx, and the phase-parity wait. A phase
//     completes when its pending arrivals and its transaction bytes both reach zero.
//   cp.async.bulk.tensor (TMA, section 9.7.9.25.5): a box of a tensor described by a tensor
//     map (CUtensorMap, made on the host by cuTensorMapEncodeTiled) copied to shared memory
//     with the map's swizzle, elements out of bounds filled with zeros, its bytes counted on
//     an mbarrier. The emulation lands the copy only when a thread waits on that barrier's
//     phase; until then the destination holds NaN bytes.
//   fence.proxy.async (the emulation stops a wgmma that reads shared bytes stored by
//     store_for_async without the writer's fence after), named barriers (bar.sync / bar.arrive
//     with an id and a thread count),
//   setmaxnreg, and release/acquire semaphores in global memory.
//
// Accumulator fragment of m64nNk16 (f32): warp w of the warpgroup holds rows 16 w .. 16 w + 15;
// with g = lane / 4 and t = lane % 4, d[4 i + j] is row 16 w + g + 8 (j / 2), column
// 8 i + 2 t + j % 2, for i < N / 8: mma.sync's m16n8 fragment repeated along N. A from
// registers (4 words a thread) is mma.m16n8k16's A fragment for the warp's 16 rows.
//
// Shared memory layouts a descriptor names (bf16, 16-byte "chunks" of 8 elements):
//   K-major (transpose flag 0): rows of M (or N) run along the swizzle's span, 8 rows make a
//     group, groups are `stride` bytes apart; the 16 K elements are two adjacent chunks
//     (without swizzle: `leading` bytes apart).
//   MN-major (transpose flag 1), swizzled: 8 K rows of the swizzle's span (64 elements at
//     128 bytes) of M or N make a group, groups along K are `stride` bytes apart and spans
//     along M or N `leading` bytes apart. Without swizzle the two swap: 8 x 8 core matrices,
//     `leading` bytes apart along K and `stride` bytes apart along M or N (ISA 9.7.15.5.1.2.1).
//   Swizzle of 32/64/128 bytes: the 16-byte chunk index within the span (address bits 4..)
//     is XORed with the address bits 7.. (the row within the 256/512/1024-byte pattern), on
//     the shared-memory address itself: tiles start on a multiple of the pattern.
#pragma once

#include "common.cuh"

#ifdef DAVINCI_EMULATE
#include "emu/hopper.h"
#define __grid_constant__
#endif

namespace dv::sm90 {

/// The swizzle field of a matrix descriptor (its two top bits). A tensor map numbers its
/// swizzles otherwise (CUtensorMapSwizzle: none 0, 32 B 1, 64 B 2, 128 B 3); the Rust side
/// encodes those by name.
enum class Swizzle : uint64_t { kNone = 0, k128 = 1, k64 = 2, k32 = 3 };

/// A tensor map, as cuTensorMapEncodeTiled writes it (CUtensorMap: 128 bytes, 64-aligned);
/// under the emulation the fields of `emu::TensorMapFields`. Passed to kernels as a
/// `const __grid_constant__` parameter so that TMA reads it from the parameter space.
struct alignas(64) TensorMap {
    uint64_t words[16];
};

/// `p`'s address in the shared-memory window.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
#ifdef DAVINCI_EMULATE
    return emu::shared_offset(p);
#else
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
}

/// A wgmma matrix descriptor for the tile at `tile` (16-byte aligned; where swizzled, with
/// address bits 7-9 zero, i.e. inside the first 128-byte row of a 1024-byte pattern, since
/// base offset 0 says the pattern starts there; a k-step's advance of 32 bytes keeps
/// that): bits 0-13 the address >> 4, 16-29 the leading
/// byte offset >> 4, 32-45 the stride byte offset >> 4, 49-51 the base offset (0: tiles
/// are aligned), 62-63 the swizzle.
__device__ __forceinline__ uint64_t descriptor(const void* tile, uint32_t leading_bytes, uint32_t stride_bytes,
                                               Swizzle swizzle) {
    const uint64_t address = (shared_address(tile) & 0x3FFFF) >> 4;
    return address | (static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFF) << 16) |
           (static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFF) << 32) |
           (static_cast<uint64_t>(swizzle) << 62);
}

/// The descriptor `bytes` further on (the start address field plus bytes >> 4): the next
/// K step of a K-major tile inside one swizzle span, or the next group of rows.
__device__ __forceinline__ uint64_t advance(uint64_t descriptor, uint32_t bytes) { return descriptor + (bytes >> 4); }

#ifndef DAVINCI_EMULATE
template <int N>
struct Wgmma;

// The N / 2 accumulators of an m64nNk16 wgmma as "+f" operands %0.., and their list in the
// instruction's text.
#define DV_D8(i) \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define DV_D16 DV_D8(0), DV_D8(8)
#define DV_D32 DV_D16, DV_D8(16), DV_D8(24)
#define DV_D64 DV_D32, DV_D8(32), DV_D8(40), DV_D8(48), DV_D8(56)
#define DV_R16 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define DV_R32 DV_R16 ", %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define DV_R64 DV_R32 ", %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

// wgmma m64n{N}k16 with its accumulators REGS / OUTS, and the operands after them numbered
// I0.. I6 (strings): from shared memory a-desc I0, b-desc I1, scale-d I2, trans-a I3,
// trans-b I4; with A from registers a I0-I3, b-desc I4, scale-d I5, trans-b I6. Scale-d
// (accumulate or not) is a predicate set from a register.
#define DV_WGMMA(N, REGS, OUTS, I0, I1, I2, I3, I4, I5, I6)                                                   \
    template <>                                                                                              \
    struct Wgmma<N> {                                                                                        \
        template <int kTransA, int kTransB>                                                                  \
        static __device__ __forceinline__ void ss(float* d, uint64_t a, uint64_t b, int accumulate) {         \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" I2 ", 0;\nwgmma.mma_async.sync.aligned.m64n" #N   \
                         "k16.f32.bf16.bf16 {" REGS "}, %" I0 ", %" I1 ", p, 1, 1, %" I3 ", %" I4 ";\n}\n"        \
                         : OUTS                                                                              \
                         : "l"(a), "l"(b), "r"(accumulate), "n"(kTransA), "n"(kTransB));                     \
        }                                                                                                    \
        template <int kTransB>                                                                               \
        static __device__ __forceinline__ void rs(float* d, const uint32_t* a, uint64_t b, int accumulate) {  \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" I5 ", 0;\nwgmma.mma_async.sync.aligned.m64n" #N   \
                         "k16.f32.bf16.bf16 {" REGS "}, {%" I0 ", %" I1 ", %" I2 ", %" I3 "}, %" I4 ", p, 1, 1, %" I6 \
                         ";\n}\n"                                                                             \
                         : OUTS                                                                              \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(accumulate), "n"(kTransB)); \
        }                                                                                                    \
    };
DV_WGMMA(32, DV_R16, DV_D16, "16", "17", "18", "19", "20", "21", "22")
DV_WGMMA(64, DV_R32, DV_D32, "32", "33", "34", "35", "36", "37", "38")
DV_WGMMA(128, DV_R64, DV_D64, "64", "65", "66", "67", "68", "69", "70")
#undef DV_WGMMA
#undef DV_D8
#undef DV_D16
#undef DV_D32
#undef DV_D64
#undef DV_R16
#undef DV_R32
#undef DV_R64
#endif

/// Orders this thread's register writes (accumulators, A fragments) before the wgmma that
/// follow: needed before the first wgmma and after registers they use were changed.
__device__ __forceinline__ void wgmma_fence() {
#ifdef DAVINCI_EMULATE
    emu::wgmma_fence();
#else
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

/// Closes the group of wgmma issued since the last commit.
__device__ __forceinline__ void wgmma_commit() {
#ifdef DAVINCI_EMULATE
    emu::wgmma_commit();
#else
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

/// Waits until at most `kPending` committed groups are in flight; their accumulators are
/// then in the registers.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
#ifdef DAVINCI_EMULATE
    emu::wgmma_wait(kPending);
#else
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}

/// D (64 x N) = A B + (accumulate ? D : 0), A and B from shared memory. kTransA / kTransB:
/// 0 K-major, 1 M- or N-major. `d` is the thread's N / 2 accumulators.
template <int N, int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_ss(float* d, uint64_t a, uint64_t b, bool accumulate) {
    static_assert(N == 32 || N == 64 || N == 128, "wgmma is wrapped for N = 32, 64, 128");
#ifdef DAVINCI_EMULATE
    emu::wgmma(N, d, a, nullptr, b, accumulate, kTransA, kTransB);
#else
    Wgmma<N>::template ss<kTransA, kTransB>(d, a, b, accumulate ? 1 : 0);
#endif
}

/// As `wgmma_ss` with A from registers: the thread's 4 words of the warp's 16 x 16 A
/// fragment (mma.m16n8k16's layout).
template <int N, int kTransB>
__device__ __forceinline__ void wgmma_rs(float* d, const uint32_t a[4], uint64_t b, bool accumulate) {
    static_assert(N == 32 || N == 64 || N == 128, "wgmma is wrapped for N = 32, 64, 128");
#ifdef DAVINCI_EMULATE
    emu::wgmma(N, d, 0, a, b, accumulate, 0, kTransB);
#else
    Wgmma<N>::template rs<kTransB>(d, a, b, accumulate ? 1 : 0);
#endif
}

/// Makes one thread's mbarrier expect `count` arrivals a phase.
__device__ __forceinline__ void mbarrier_init(uint64_t* barrier, unsigned count) {
#ifdef DAVINCI_EMULATE
    emu::mbarrier_init(barrier, count);
#else
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(count) : "memory");
#endif
}

/// Makes initialised barriers visible to the async proxy (TMA) and the other threads;
/// a __syncthreads follows.
__device__ __forceinline__ void fence_barrier_init() {
#ifndef DAVINCI_EMULATE
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

/// One arrival on the barrier's current phase.
__device__ __forceinline__ void mbarrier_arrive(uint64_t* barrier) {
#ifdef DAVINCI_EMULATE
    emu::mbarrier_arrive(barrier, 0);
#else
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(barrier)) : "memory");
#endif
}

/// One arrival that also makes the phase wait for `bytes` more bytes of async copies.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* barrier, unsigned bytes) {
#ifdef DAVINCI_EMULATE
    emu::mbarrier_arrive(barrier, bytes);
#else
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(barrier)),
                 "r"(bytes)
                 : "memory");
#endif
}

/// Waits until the phase with parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* barrier, unsigned parity) {
#ifdef DAVINCI_EMULATE
    emu::mbarrier_wait(barrier, parity);
#else
    asm volatile(
        "{\n.reg .pred done;\n"
        "wait:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra wait;\n}\n" ::"r"(shared_address(barrier)),
        "r"(parity)
        : "memory");
#endif
}

/// TMA: copies the box of `map` at element coordinates (c0 innermost, c1, c2) into `to`
/// (on a multiple of the swizzle pattern), counting its bytes on `barrier`.
__device__ __forceinline__ void tma_load_3d(void* to, const TensorMap& map, int c0, int c1, int c2,
                                            uint64_t* barrier) {
#ifdef DAVINCI_EMULATE
    const int coords[3] = {c0, c1, c2};
    emu::tma_load(to, map.words, coords, 3, barrier);
#else
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
        "[%5];\n" ::"r"(shared_address(to)),
        "l"(reinterpret_cast<uint64_t>(&map)), "r"(c0), "r"(c1), "r"(c2), "r"(shared_address(barrier))
        : "memory");
#endif
}

/// Stores `value` into shared memory for the async proxy (wgmma's operands) to read: a
/// generic-proxy write, which the async proxy sees only after this thread's
/// fence_proxy_async. The emulation records the bytes until that fence, and a wgmma reading
/// them first stops the process (kernels/emu/proxy.h).
template <class T>
__device__ __forceinline__ void store_for_async(void* shared, T value) {
    *static_cast<T*>(shared) = value;
#ifdef DAVINCI_EMULATE
    emu::note_generic_write(shared, sizeof(T));
#endif
}

/// Orders this thread's generic-proxy writes to shared memory before later async-proxy
/// reads of it (wgmma reading a tile the threads wrote).
__device__ __forceinline__ void fence_proxy_async() {
#ifdef DAVINCI_EMULATE
    emu::fence_proxy_async();
#else
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// Named barrier `id` (1-15; 0 is __syncthreads') over `threads` threads (a multiple of 32):
/// `sync` waits for them all, `arrive` counts this thread and goes on.
__device__ __forceinline__ void named_sync(int id, int threads) {
#ifdef DAVINCI_EMULATE
    emu::named_barrier(id, threads, true);
#else
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#endif
}
__device__ __forceinline__ void named_arrive(int id, int threads) {
#ifdef DAVINCI_EMULATE
    emu::named_barrier(id, threads, false);
#else
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#endif
}

/// Gives back registers (a producer warpgroup that only issues copies) or takes more (the
/// consumers): warpgroup-wide; the emulation has no register file, so nothing there.
template <int kRegisters>
__device__ __forceinline__ void registers_down() {
#ifndef DAVINCI_EMULATE
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}
template <int kRegisters>
__device__ __forceinline__ void registers_up() {
#ifndef DAVINCI_EMULATE
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
#endif
}

/// A global counter read with acquire semantics (gpu scope): what the writer released
/// before its increment is visible after.
__device__ __forceinline__ int load_acquire(const int* counter) {
#ifdef DAVINCI_EMULATE
    return __atomic_load_n(counter, __ATOMIC_ACQUIRE);
#else
    int value;
    asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(value) : "l"(counter) : "memory");
    return value;
#endif
}

/// Adds one to a global counter with release semantics (gpu scope).
__device__ __forceinline__ void increment_release(int* counter) {
#ifdef DAVINCI_EMULATE
    __atomic_fetch_add(counter, 1, __ATOMIC_RELEASE);
#else
    asm volatile("red.release.gpu.global.add.s32 [%0], 1;\n" ::"l"(counter) : "memory");
#endif
}

/// The next item of work from a global counter (relaxed): blocks get items in the order
/// they start, so an item's lower-numbered ones are already held by running blocks.
__device__ __forceinline__ int take_work(int* counter) {
#ifdef DAVINCI_EMULATE
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
#else
    return atomicAdd(counter, 1);
#endif
}

/// Orders this thread's global writes before its later ones at gpu scope (membar.gl).
/// ThreadSanitizer does not model fences (GCC warns that it ignores them): the race check's
/// build leaves it out, and the counter's release and acquire order the writes there.
__device__ __forceinline__ void fence_gpu() {
#ifdef DAVINCI_EMULATE
#ifndef __SANITIZE_THREAD__
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
#else
    __threadfence();
#endif
}

/// Waits until a global counter reaches `value` (acquire). The emulation runs blocks one
/// after another in launch order, so a counter that is not there yet never will be: it
/// stops the process with a message instead of spinning for ever.
__device__ __forceinline__ void wait_for_count(const int* counter, int value) {
#ifdef DAVINCI_EMULATE
    const int now = load_acquire(counter);
    if (now != value) {
        std::fprintf(stderr, "emulation: block (%u, %u) waits for a count of %d that is %d: an earlier block in "
                     "launch order must bring it\n", blockIdx.x, blockIdx.y, value, now);
        std::abort();
    }
#else
    while (load_acquire(counter) != value) {
    }
#endif
}

}  // namespace dv::sm90
