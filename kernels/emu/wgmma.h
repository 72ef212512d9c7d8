// Host emulation of wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16, its shared-memory
// matrix descriptors, and wgmma.fence / commit_group / wait_group, which kernels/hopper.cuh
// wraps. The definitions followed are the PTX ISA's, section 9.7.15.5.1 "Register Fragments
// and Shared Memory Matrix Layouts": the accumulator and A fragments (Figures "WGMMA
// .m64nNk16 register fragment layout"), the canonical layouts (9.7.15.5.1.2.1.3, in CuTe
// notation there), the leading and stride byte offsets (9.7.15.5.1.2.1.1-2) and the
// descriptor's bits (9.7.15.5.1.2.2).
//
// Issue. The warpgroup's 128 threads meet and publish their operands, which must agree
// (shape, descriptors, transpose flags, scale-d: the instruction is .aligned). Each thread
// then computes its own N / 2 accumulators at once, reading A and B from shared memory now
// (A from its warp's registers in the RS form), keeps them in flight, and finds NaN in its
// registers instead. A later wgmma on the same registers before the wait starts from the
// values in flight, as the hardware chains in-flight accumulators. commit_group closes the
// thread's open group; wait_group k lands the results of all but the newest k committed
// groups in their registers (uncommitted wgmma are not waited for). So a kernel that reads
// accumulators before their wait reads NaN, and one that writes them while in flight stops
// the process at the wait (the registers no longer hold the NaN written at issue).
//
// Layouts. Element (mn, k) of a 16-deep operand, mn along M (A) or N (B), bf16, lies this
// many bytes past the descriptor's start address, with LBO and SBO its leading and stride
// byte offsets and W the swizzle's span (16 bytes without swizzle, else 32, 64 or 128):
//   K-major, no swizzle:   (mn % 8) 16 + (mn / 8) SBO + (k / 8) LBO + (k % 8) 2
//                          (8 x 16-byte core matrices; the two along K are LBO apart)
//   K-major, swizzled:     (mn % 8) W + (mn / 8) SBO + 2 k          (LBO unused)
//   MN-major, no swizzle:  (mn % 8) 2 + (mn / 8) SBO + (k % 8) 16 + (k / 8) LBO
//                          (core matrices along M/N are SBO apart, along K LBO)
//   MN-major, swizzled:    (mn % (W/2)) 2 + (mn / (W/2)) LBO + (k % 8) W + (k / 8) SBO
//                          (spans of W/2 elements along M/N are LBO apart, groups of 8 K
//                          rows SBO apart: the roles the unswizzled layout gives the other)
// and the swizzle then acts on that shared-memory address: address bits 4.. (the 16-byte
// chunk within the span) XOR bits 7.. (the row within the 8-row pattern), W / 16 values
// of them. The base offset must be 0 (patterns start on a multiple of their 8 W bytes),
// which is what kernels/hopper.cuh's descriptors say.
//
// What it cannot catch: a missing wgmma.fence (a no-op here: registers are read in program
// order), A registers or shared-memory operands changed while the wgmma is in flight (both
// are read at issue), a descriptor whose pattern does not start on its alignment, and
// timing.
#pragma once

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bf16.h"
#include "host_cuda.h"
#include "warp_matrix.h"

namespace emu {

/// Stops the process at an instruction whose emulation is still to be written.
[[noreturn]] inline void not_emulated(const char* what) {
    std::fprintf(stderr, "emulation: %s is not emulated yet\n", what);
    std::abort();
}

/// A matrix descriptor's fields, in bytes.
struct MatrixDescriptor {
    uint32_t start, leading, stride;
    uint32_t span;  // the swizzle's: 16 (none), 32, 64 or 128
};

inline MatrixDescriptor decode_descriptor(uint64_t bits, const char* operand) {
    constexpr uint64_t kFields = 0x3FFFull | (0x3FFFull << 16) | (0x3FFFull << 32) | (7ull << 49) | (3ull << 62);
    if (bits & ~kFields) {
        std::fprintf(stderr,
                     "emulation: wgmma's %s descriptor %#llx has bits set outside its fields (a start address "
                     "carried past 14 bits?)\n",
                     operand, static_cast<unsigned long long>(bits));
        std::abort();
    }
    if ((bits >> 49) & 7) {
        std::fprintf(stderr,
                     "emulation: wgmma's %s descriptor %#llx has base offset %llu; the emulation takes swizzle "
                     "patterns that start on their alignment (base offset 0)\n",
                     operand, static_cast<unsigned long long>(bits),
                     static_cast<unsigned long long>((bits >> 49) & 7));
        std::abort();
    }
    static constexpr uint32_t kSpans[4] = {16, 128, 64, 32};  // modes 0 none, 1 128B, 2 64B, 3 32B
    return {static_cast<uint32_t>(bits & 0x3FFF) << 4, static_cast<uint32_t>((bits >> 16) & 0x3FFF) << 4,
            static_cast<uint32_t>((bits >> 32) & 0x3FFF) << 4, kSpans[bits >> 62]};
}

/// The shared-memory address of element (mn, k) of a 16-deep bf16 operand (the layouts of
/// the header), swizzle applied.
inline uint32_t operand_address(const MatrixDescriptor& m, bool mn_major, uint32_t mn, uint32_t k) {
    const uint32_t w = m.span;
    uint32_t at;
    if (!mn_major && w == 16) {
        at = (mn % 8) * 16 + (mn / 8) * m.stride + (k / 8) * m.leading + (k % 8) * 2;
    } else if (!mn_major) {
        at = (mn % 8) * w + (mn / 8) * m.stride + k * 2;
    } else if (w == 16) {
        at = (mn % 8) * 2 + (mn / 8) * m.stride + (k % 8) * 16 + (k / 8) * m.leading;
    } else {
        at = (mn % (w / 2)) * 2 + (mn / (w / 2)) * m.leading + (k % 8) * w + (k / 8) * m.stride;
    }
    at += m.start;
    return at ^ (((at >> 7) % (w / 16)) << 4);
}

/// Stops the process (the device faults), naming the first element of the operand, `rows`
/// x 16, that lies past the block's shared memory: the same in every thread that gets here.
[[noreturn]] inline void stop_outside(const MatrixDescriptor& m, bool mn_major, uint32_t rows, const char* operand) {
    const size_t bytes = block().shared.size();
    for (uint32_t mn = 0; mn < rows; ++mn) {
        for (uint32_t k = 0; k < 16; ++k) {
            const uint32_t at = operand_address(m, mn_major, mn, k);
            if (static_cast<size_t>(at) + 2 > bytes) {
                std::fprintf(stderr,
                             "emulation: wgmma reads %s's element (%u, %u) at shared address %u (%#x), past the "
                             "block's %zu bytes of shared memory\n",
                             operand, mn, k, at, at, bytes);
                std::abort();
            }
        }
    }
    std::abort();  // not reached: the caller found an element outside
}

/// Element (mn, k) of an operand of `rows` x 16 bf16 elements in shared memory.
inline float operand_element(const MatrixDescriptor& m, bool mn_major, uint32_t rows, uint32_t mn, uint32_t k,
                             const char* operand) {
    const uint32_t at = operand_address(m, mn_major, mn, k);
    SharedMemory& shared = block().shared;
    if (static_cast<size_t>(at) + 2 > shared.size()) stop_outside(m, mn_major, rows, operand);
    check_async_read(at, "wgmma");
    uint16_t bits;
    std::memcpy(&bits, shared.data() + at, 2);
    return __bfloat162float({bits});
}

/// What registers hold while a wgmma on them is in flight: a quiet NaN with a payload of its
/// own, so that the wait can tell whether the kernel wrote them meanwhile.
constexpr uint32_t kInFlightBits = 0x7FC0DEADu;

/// One thread's wgmma in flight.
struct WgmmaInFlight {
    float* d;
    int count;       // N / 2 registers
    uint64_t group;  // the thread's commits before it: committed once there are more
    bool chained;    // a later wgmma on the same registers took its result over
    std::array<float, 128> result;
};

struct WgmmaThread {
    std::vector<WgmmaInFlight> in_flight;
    uint64_t commits = 0;
};

/// Each thread's wgmma state, by its index in the block, forgotten between blocks: the reset
/// is registered once, at static initialization (an inline variable is one object in every
/// translation unit that includes this).
inline std::vector<WgmmaThread>& wgmma_threads() {
    static std::vector<WgmmaThread> threads;
    return threads;
}
inline void reset_wgmma_threads() { wgmma_threads().assign(block().threads, WgmmaThread{}); }
inline const bool wgmma_reset_registered = (block_resets().push_back(&reset_wgmma_threads), true);

inline WgmmaThread& wgmma_thread() {
    auto& threads = wgmma_threads();
    if (linear_thread >= threads.size()) {
        std::fprintf(stderr, "emulation: wgmma state for %zu threads, none for thread %u (its reset never ran)\n",
                     threads.size(), linear_thread);
        std::abort();
    }
    return threads[linear_thread];
}

/// What each thread of the warpgroup gives a wgmma.
struct WgmmaIssue {
    uint64_t a_desc, b_desc;
    uint32_t a[4];
    int32_t n;
    uint8_t a_in_registers, accumulate, trans_a, trans_b;

    bool same_instruction(const WgmmaIssue& o) const {
        return n == o.n && a_in_registers == o.a_in_registers && accumulate == o.accumulate &&
               trans_a == o.trans_a && trans_b == o.trans_b && b_desc == o.b_desc &&
               (a_in_registers || a_desc == o.a_desc);
    }
};

/// wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16, one thread's share: D = A B
/// (+ D if `accumulate`), A through `a_desc` or, when `a_regs` is given, from the warp's
/// registers; `trans_a` / `trans_b` 1 for M- / N-major operands.
inline void wgmma(int n, float* d, uint64_t a_desc, const uint32_t* a_regs, uint64_t b_desc, bool accumulate,
                  int trans_a, int trans_b) {
    WgmmaIssue mine{a_desc, b_desc, {0, 0, 0, 0}, n, a_regs != nullptr, accumulate, trans_a != 0, trans_b != 0};
    if (a_regs) std::memcpy(mine.a, a_regs, sizeof mine.a);
    const auto all = warpgroup_gather(mine);
    const unsigned t = linear_thread, rank = t % 128, warp = rank / 32, lane = t % 32;
    for (unsigned other = 0; other < 128; ++other) {
        if (!all[other].same_instruction(mine)) {
            std::fprintf(stderr,
                         "emulation: threads %u and %u of warpgroup %u issue different wgmma (shape, descriptors, "
                         "transpose or scale-d); the instruction is warpgroup-uniform\n",
                         t, t - rank + other, t / 128);
            std::abort();
        }
    }
    if (n < 8 || n > 256 || n % 8 != 0) {
        std::fprintf(stderr, "emulation: wgmma m64n%dk16 has no such shape (N a multiple of 8 up to 256)\n", n);
        std::abort();
    }
    const int count = n / 2, g = static_cast<int>(lane / 4), q = static_cast<int>(lane % 4);

    // This thread's two rows of A (16 w + g and 16 w + g + 8), all 16 k.
    float a[2][16];
    if (a_regs) {
        for (int from = 4 * g; from < 4 * g + 4; ++from) {  // the lanes holding those rows
            const WgmmaIssue& o = all[warp * 32 + from];
            for (int j = 0; j < 4; ++j) {
                const int col = 2 * (from % 4) + 8 * (j / 2);
                a[j % 2][col] = bf16_lo(o.a[j]);
                a[j % 2][col + 1] = bf16_hi(o.a[j]);
            }
        }
    } else {
        const MatrixDescriptor desc = decode_descriptor(a_desc, "A");
        for (int h = 0; h < 2; ++h) {
            const uint32_t row = 16 * warp + g + 8 * h;
            for (uint32_t k = 0; k < 16; ++k) a[h][k] = operand_element(desc, trans_a != 0, 64, row, k, "A");
        }
    }
    const MatrixDescriptor b_fields = decode_descriptor(b_desc, "B");

    // The accumulators to start from: those of a wgmma on the same registers in flight, or
    // the registers.
    WgmmaThread& state = wgmma_thread();
    WgmmaInFlight next{d, count, state.commits, false, {}};
    const float* start = d;
    for (WgmmaInFlight& e : state.in_flight) {
        if (e.chained || e.d + e.count <= d || d + count <= e.d) continue;
        if (e.d != d || e.count != count) {
            std::fprintf(stderr,
                         "emulation: thread %u issues a wgmma on accumulators that overlap, without matching, "
                         "those of a wgmma in flight\n",
                         t);
            std::abort();
        }
        e.chained = true;
        start = e.result.data();
    }
    for (int i = 0; i < count; ++i) {
        const int row_half = (i % 4) / 2, col = 8 * (i / 4) + 2 * q + i % 2;
        float acc = accumulate ? start[i] : 0.0f;
        for (uint32_t k = 0; k < 16; ++k) {
            acc += a[row_half][k] * operand_element(b_fields, trans_b != 0, static_cast<uint32_t>(n), col, k, "B");
        }
        next.result[i] = acc;
    }
    state.in_flight.push_back(next);
    for (int i = 0; i < count; ++i) std::memcpy(&d[i], &kInFlightBits, 4);
}

/// wgmma.fence: orders register writes before the wgmma that follow. Registers are read in
/// program order here, so there is nothing to do (and a missing fence goes unseen).
inline void wgmma_fence() {}

/// wgmma.commit_group: this thread's wgmma since the last commit become a group.
inline void wgmma_commit() { ++wgmma_thread().commits; }

/// wgmma.wait_group `pending`: lands every committed group but the newest `pending`.
inline void wgmma_wait(int pending) {
    WgmmaThread& state = wgmma_thread();
    const uint64_t keep = static_cast<uint64_t>(pending);
    std::vector<WgmmaInFlight> still;
    for (WgmmaInFlight& e : state.in_flight) {
        if (e.group + keep >= state.commits) {
            still.push_back(e);
            continue;
        }
        if (e.chained) continue;  // its registers belong to the wgmma that took it over
        for (int i = 0; i < e.count; ++i) {
            if (std::memcmp(&e.d[i], &kInFlightBits, 4) != 0) {
                std::fprintf(stderr,
                             "emulation: thread %u wrote accumulator %d while a wgmma on it was in flight (before "
                             "its wait_group)\n",
                             linear_thread, i);
                std::abort();
            }
        }
        std::memcpy(e.d, e.result.data(), sizeof(float) * e.count);
    }
    state.in_flight.swap(still);
}

}  // namespace emu
