// Host emulation of the asynchronous synchronisation that kernels/hopper.cuh wraps: mbarrier
// (PTX ISA 9.7.13.15), TMA tensor loads (cp.async.bulk.tensor; tensors, their bounding box
// and swizzling modes in 5.5) and named barriers (bar / barrier, 9.7.13.1). Each follows
// the ISA's rules and stops the process, with a message, where a kernel breaks one, so that
// the emulated tests catch the mistakes that hang or corrupt a GPU run.
//
// mbarrier: the state lives in a side table keyed by the barrier's shared offset, forgotten
//   between blocks; the barrier's 8 bytes hold a tag checked at every use, so a tile placed
//   over a barrier shows up. A phase completes when its pending arrivals and its tx-count
//   (bytes announced by arrive.expect_tx minus bytes of the copies recorded on the phase)
//   are both zero; the pending count then resets to the init count and the phase advances.
//   mbarrier_wait(parity) returns once the current phase's parity differs from `parity`
//   (the phase with that parity completed). Stops: init of a barrier already initialised
//   (the ISA wants mbarrier.inval first), an arrival past the count, an arrival on phase
//   k before any wait returned for phase k - 1 (the ISA asks for one), a phase whose
//   arrivals are in while its copies brought more bytes than announced, a wait or arrival
//   on shared memory that holds no barrier, and a wait with no barrier moving for 120 s
//   (a deadlock, such as a wait on the parity of a phase that completed long ago, which
//   waits for the next one: the message gives the barrier's counts).
// TMA: the map is the emulation's own encoding (`TensorMapFields`, made on the Rust side by
//   `TensorMapSpec::emulated_words`). At issue the destination's bytes become 0xFF (NaN) and
//   the copy is recorded, with its bytes, on the barrier's current phase. The copy lands
//   (global read, shared written) when a wait on that barrier returns after the phase
//   completed, before the wait returns: hardware lands it somewhere between issue and
//   completion, and only a thread that waited (or synchronised with one) may read it, so a
//   thread that reads the tile without waiting reads NaN even when the phase has completed.
//   (A completed copy also lands before a later copy or a barrier takes its bytes.) The box
//   at the coordinates is written densely, innermost fastest, elements out of bounds zeros;
//   with a swizzle of W bytes the 16-byte chunk index within each 128-byte line of shared
//   memory (address bits 4..6) is XORed with (address >> 7) & (W / 16 - 1), on the shared
//   address itself (the ISA's tables: the pattern starts on a 256/512/1024-byte boundary,
//   with a base offset otherwise). A copy may come before the arrive.expect_tx that
//   announces it (tx-count goes below zero meanwhile, as the ISA allows) while an arrival
//   is pending. Stops: a map the emulation did not make, a rank other than the map's, a
//   destination not 128-byte aligned or past the shared memory, a destination overlapping
//   a barrier or a copy still in flight, a swizzled box whose image leaves its bytes.
// Named barriers 1..15: bar.sync waits and bar.arrive counts and goes on; the barrier
//   completes when `threads` threads arrived, and is reused at once. Stops: an id outside
//   1..15, a count that is not a positive multiple of 32 within the block, two counts in
//   one phase, a thread arriving twice before the barrier completes (the ISA's warning
//   about bar.arrive followed by another bar), a warp taking part with some of its threads
//   (bar is .aligned), and a wait with nothing moving for 120 s.
//
// What it cannot catch: fence.mbarrier_init (a no-op: every access here is ordered by the
// emulation's mutex; fence.proxy.async is proxy.h's, for wgmma), the real memory model (acquire
// and release are sequentially consistent here), a read by a thread that did not wait
// racing with one that did (the copy has landed once any waiter returned), copies a block
// leaves in flight when it exits (they never land), timing, and anything about the
// driver's own encoding of the map.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "host_cuda.h"

namespace emu {

/// The emulation's tensor map: what the Rust side (`TensorMapSpec::emulated_words`) writes
/// into the 128 bytes of `dv::sm90::TensorMap` in place of the driver's opaque encoding.
/// Words: 0 magic, 1 address, 2 rank | element bytes << 32, 3 swizzle bytes, 4-8 dims,
/// 9-12 strides, 13-15 box (two a word).
struct TensorMapFields {
    uint64_t magic;          // kTensorMapMagic: a map the emulation made
    uint64_t address;        // global address of element (0, ..., 0)
    uint32_t rank;           // 1 to 5
    uint32_t element_bytes;  // 2 (bf16) or 4 (f32)
    uint32_t swizzle_bytes;  // 0 (none), 32, 64 or 128
    uint32_t unused;
    uint64_t dims[5];     // elements, innermost first; 1 past the rank
    uint64_t strides[4];  // byte strides of dims 1 .. rank - 1; 0 past the rank
    uint32_t box[5];      // box elements, innermost first; 1 past the rank
    uint32_t unused_too;
};
static_assert(sizeof(TensorMapFields) <= 128, "a tensor map is 128 bytes");
static_assert(offsetof(TensorMapFields, dims) == 4 * 8 && offsetof(TensorMapFields, strides) == 9 * 8 &&
                  offsetof(TensorMapFields, box) == 13 * 8,
              "the word layout the Rust side writes");

/// "DVTMAP01": the first word of every map `TensorMapSpec::emulated_words` makes.
inline constexpr uint64_t kTensorMapMagic = 0x4456544d41503031ull;

namespace tma_impl {

/// Counts an mbarrier holds: 2^20 - 1 at most (ISA, "Contents of the mbarrier object").
inline constexpr int64_t kCountLimit = (int64_t{1} << 20) - 1;
/// What the emulation writes into a barrier's 8 bytes, and expects there at every use.
inline constexpr uint64_t kBarrierTag = 0x6d62617272696572ull;
/// How long waiting threads may see no barrier move before the emulation calls it a deadlock.
inline constexpr auto kStall = std::chrono::seconds(120);

[[noreturn]] inline void fail(const char* format, ...) __attribute__((format(printf, 1, 2)));
inline void fail(const char* format, ...) {
    std::va_list args;
    va_start(args, format);
    std::fputs("emulation: ", stderr);
    std::vfprintf(stderr, format, args);
    std::fputc('\n', stderr);
    va_end(args);
    std::abort();
}

/// One cp.async.bulk.tensor: the box of `map` at `coords` into shared memory at `offset`.
struct Copy {
    TensorMapFields map;
    int64_t coords[5];
    uint32_t offset, bytes;
};

struct Mbarrier {
    unsigned count = 0;          // arrivals a phase (the init count)
    unsigned pending = 0;        // arrivals the current phase still needs
    int64_t announced = 0;       // bytes arrive.expect_tx announced on the current phase
    int64_t delivered = 0;       // bytes of the copies recorded on the current phase
    uint64_t phase = 0;          // the current phase: phases 0 .. phase - 1 completed
    int64_t observed = -1;       // the latest completed phase a wait returned for
    std::vector<Copy> in_flight;  // recorded on the current phase
    std::vector<Copy> completed;  // of completed phases, not landed yet
    std::condition_variable moved;
};

struct NamedBarrier {
    unsigned threads = 0;  // the count the phase in progress began with
    unsigned arrived = 0;
    uint64_t generation = 0;                  // completed phases
    std::vector<unsigned> warp_arrivals;      // this phase's arrivals by warp
    std::vector<uint64_t> thread_generation;  // by thread: 1 + the phase it last arrived in
    std::condition_variable completed;
};

struct State {
    std::mutex mutex;
    std::map<uint32_t, Mbarrier> barriers;  // by shared offset
    NamedBarrier named[16];
    std::chrono::steady_clock::time_point progress = std::chrono::steady_clock::now();
};

inline void reset();

inline State& state() {
    static State s;
    static const bool registered = (block_resets().push_back(&reset), true);
    (void)registered;
    return s;
}

/// Between blocks (no thread of the block runs): every barrier and copy is forgotten.
inline void reset() {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.barriers.clear();
    for (NamedBarrier& n : s.named) {
        n.threads = n.arrived = 0;
        n.generation = 0;
        n.warp_arrivals.clear();
        n.thread_generation.clear();
    }
    s.progress = std::chrono::steady_clock::now();
}

/// Waits on `cv` until `done()`, stopping the process through `stalled()` when no barrier
/// of the block moved for kStall while it waited.
template <class Done, class Stalled>
void await(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Done done, Stalled stalled) {
    State& s = state();
    const auto start = std::chrono::steady_clock::now();
    while (!done()) {
        cv.wait_for(lock, std::chrono::seconds(1));
        if (!done() && std::chrono::steady_clock::now() - std::max(start, s.progress) > kStall) stalled();
    }
}

/// The barrier at `bar`, which must have been initialised and not written over.
inline Mbarrier& live(State& s, const uint64_t* bar, const char* op) {
    const uint32_t at = shared_offset(bar);
    const auto found = s.barriers.find(at);
    if (found == s.barriers.end()) fail("%s on shared offset %u, which holds no initialised mbarrier", op, at);
    uint64_t bytes;
    std::memcpy(&bytes, bar, sizeof bytes);
    if (bytes != kBarrierTag) {
        fail("%s: the mbarrier at shared offset %u was written over (its 8 bytes hold %#llx): shared data placed "
             "on a barrier?",
             op, at, static_cast<unsigned long long>(bytes));
    }
    return found->second;
}

/// Where the byte the dense box puts at shared offset `offset` lands with a swizzle of
/// `span` bytes (0: none).
inline uint32_t swizzled(uint32_t offset, uint32_t span) {
    if (span == 0) return offset;
    return offset ^ (((offset >> 7) & (span / 16 - 1)) << 4);
}

/// Reads the box from global memory into shared memory (zeros out of bounds).
inline void land(const Copy& c) {
    const TensorMapFields& m = c.map;
    unsigned char* shared = block().shared.data();
    const uint32_t e = m.element_bytes;
    uint32_t at = 0;  // byte offset in the box, innermost fastest
    for (uint32_t i4 = 0; i4 < m.box[4]; ++i4)
        for (uint32_t i3 = 0; i3 < m.box[3]; ++i3)
            for (uint32_t i2 = 0; i2 < m.box[2]; ++i2)
                for (uint32_t i1 = 0; i1 < m.box[1]; ++i1) {
                    const int64_t outer[4] = {c.coords[1] + i1, c.coords[2] + i2, c.coords[3] + i3, c.coords[4] + i4};
                    bool inside = true;
                    uint64_t row = m.address;
                    for (int d = 0; d < 4; ++d) {
                        inside = inside && outer[d] >= 0 && static_cast<uint64_t>(outer[d]) < m.dims[d + 1];
                        if (inside) row += static_cast<uint64_t>(outer[d]) * m.strides[d];
                    }
                    for (uint32_t i0 = 0; i0 < m.box[0]; ++i0, at += e) {
                        unsigned char* to = shared + swizzled(c.offset + at, m.swizzle_bytes);
                        const int64_t x = c.coords[0] + i0;
                        if (inside && x >= 0 && static_cast<uint64_t>(x) < m.dims[0]) {
                            std::memcpy(to, reinterpret_cast<const void*>(row + static_cast<uint64_t>(x) * e), e);
                        } else {
                            std::memset(to, 0, e);
                        }
                    }
                }
}

/// Lands the completed copies of `m` that intersect [from, to) (every one without a range).
inline void land_completed(Mbarrier& m, uint32_t from = 0, uint32_t to = UINT32_MAX) {
    std::vector<Copy> kept;
    for (const Copy& c : m.completed) {
        if (c.offset < to && from < c.offset + c.bytes) {
            land(c);
        } else {
            kept.push_back(c);
        }
    }
    m.completed.swap(kept);
}

/// Completes the current phase if its arrivals and bytes are all in.
inline void settle(State& s, Mbarrier& m, uint32_t at) {
    if (m.pending > 0) return;
    if (m.delivered > m.announced) {
        fail("mbarrier at shared offset %u, phase %llu: every arrival is in, but its copies brought %lld bytes where "
             "arrive.expect_tx announced %lld (tx-count would stay below zero)",
             at, static_cast<unsigned long long>(m.phase), static_cast<long long>(m.delivered),
             static_cast<long long>(m.announced));
    }
    if (m.delivered < m.announced) return;  // bytes still to come
    m.completed.insert(m.completed.end(), m.in_flight.begin(), m.in_flight.end());
    m.in_flight.clear();
    m.phase += 1;
    m.pending = m.count;
    m.announced = m.delivered = 0;
    s.progress = std::chrono::steady_clock::now();
    m.moved.notify_all();
}

/// The map's fields, refusing words the emulation did not write or could not have.
inline TensorMapFields read_map(const uint64_t* words, int rank) {
    TensorMapFields m;
    std::memcpy(&m, words, sizeof m);
    if (m.magic != kTensorMapMagic) {
        fail("cp.async.bulk.tensor with a tensor map the emulation did not make (first word %#llx): maps come from "
             "Executor::tensor_map",
             static_cast<unsigned long long>(m.magic));
    }
    if (m.rank < 1 || m.rank > 5) fail("cp.async.bulk.tensor: the tensor map has rank %u", m.rank);
    if (static_cast<uint32_t>(rank) != m.rank) {
        fail("cp.async.bulk.tensor.%dd with a tensor map of rank %u", rank, m.rank);
    }
    const uint32_t e = m.element_bytes, span = m.swizzle_bytes;
    if (e != 1 && e != 2 && e != 4 && e != 8) fail("cp.async.bulk.tensor: %u-byte elements", e);
    if (span != 0 && span != 32 && span != 64 && span != 128) fail("cp.async.bulk.tensor: a %u-byte swizzle", span);
    for (int d = 0; d < 5; ++d) {
        if (m.box[d] < 1 || m.box[d] > 256 || m.dims[d] < 1) {
            fail("cp.async.bulk.tensor: dimension %d has %llu elements and a box of %u", d,
                 static_cast<unsigned long long>(m.dims[d]), m.box[d]);
        }
    }
    const uint32_t inner = m.box[0] * e;
    if (inner % 16 != 0 || (span != 0 && inner > span)) {
        fail("cp.async.bulk.tensor: the box's inner %u bytes are not a multiple of 16 within the %u-byte swizzle",
             inner, span);
    }
    return m;
}

/// mbarrier.init.shared::cta.b64: `count` arrivals a phase, phase 0, no bytes expected.
inline void init(uint64_t* bar, unsigned count) {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    const uint32_t at = shared_offset(bar);
    if (at % 8 != 0 || at + 8 > block().shared.size()) {
        fail("mbarrier.init at shared offset %u: a barrier is 8 bytes, 8-byte aligned, in the shared memory", at);
    }
    if (count < 1 || count > kCountLimit) fail("mbarrier.init with count %u (1 to 2^20 - 1)", count);
    if (s.barriers.count(at) != 0) {
        fail("mbarrier.init at shared offset %u, which already holds a barrier (the ISA wants mbarrier.inval "
             "before initialising it again)",
             at);
    }
    for (auto& [other, m] : s.barriers) {
        for (const Copy& c : m.in_flight) {
            if (c.offset < at + 8 && at < c.offset + c.bytes) {
                fail("mbarrier.init at shared offset %u, inside a copy in flight to %u..%u", at, c.offset,
                     c.offset + c.bytes);
            }
        }
        land_completed(m, at, at + 8);  // completed copies have landed before the barrier is made
    }
    Mbarrier& m = s.barriers[at];
    m.count = m.pending = count;
    std::memcpy(bar, &kBarrierTag, sizeof kBarrierTag);
    s.progress = std::chrono::steady_clock::now();
}

/// mbarrier.arrive (tx_bytes 0) or mbarrier.arrive.expect_tx: the phase's tx-count grows by
/// tx_bytes, then one arrival.
inline void arrive(uint64_t* bar, unsigned tx_bytes) {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    Mbarrier& m = live(s, bar, tx_bytes == 0 ? "mbarrier.arrive" : "mbarrier.arrive.expect_tx");
    const uint32_t at = shared_offset(bar);
    const auto phase = static_cast<unsigned long long>(m.phase);
    if (m.phase > 0 && m.observed < static_cast<int64_t>(m.phase) - 1) {
        fail("arrival on phase %llu of the mbarrier at shared offset %u before any wait returned for phase %llu "
             "(the ISA asks for one each phase)",
             phase, at, phase - 1);
    }
    if (m.pending == 0) {
        fail("an arrival past the count on the mbarrier at shared offset %u: phase %llu's %u arrivals are in, its "
             "copies still owe %lld bytes",
             at, phase, m.count, static_cast<long long>(m.announced - m.delivered));
    }
    m.announced += tx_bytes;
    if (m.announced - m.delivered > kCountLimit) {
        fail("mbarrier at shared offset %u: tx-count %lld past 2^20 - 1", at,
             static_cast<long long>(m.announced - m.delivered));
    }
    m.pending -= 1;
    s.progress = std::chrono::steady_clock::now();
    settle(s, m, at);
}

/// mbarrier.try_wait.parity in a loop: returns once the phase with parity `parity` has
/// completed (the current phase's parity differs), with that phase's copies landed.
inline void wait(uint64_t* bar, unsigned parity) {
    State& s = state();
    std::unique_lock<std::mutex> lock(s.mutex);
    Mbarrier& m = live(s, bar, "mbarrier.try_wait.parity");
    const uint32_t at = shared_offset(bar);
    parity &= 1;
    await(
        lock, m.moved, [&] { return (m.phase & 1) != parity; },
        [&] {
            fail("mbarrier.try_wait.parity %u on the mbarrier at shared offset %u: nothing moved for %lld s (phase "
                 "%llu waits for %u of %u arrivals and %lld bytes): a deadlock",
                 parity, at, static_cast<long long>(kStall.count()), static_cast<unsigned long long>(m.phase),
                 m.pending, m.count, static_cast<long long>(m.announced - m.delivered));
        });
    m.observed = std::max(m.observed, static_cast<int64_t>(m.phase) - 1);
    land_completed(m);
}

/// cp.async.bulk.tensor.{rank}d.shared::cluster.global.mbarrier::complete_tx::bytes: the box
/// of the map at `coords` (innermost first) into `dst`, its bytes counted on `bar`.
inline void load(void* dst, const uint64_t* map_words, const int* coords, int rank, uint64_t* bar) {
    Copy c;
    c.map = read_map(map_words, rank);
    for (int d = 0; d < 5; ++d) c.coords[d] = d < rank ? coords[d] : 0;
    uint64_t bytes = c.map.element_bytes;
    for (uint32_t box : c.map.box) bytes *= box;
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    Mbarrier& m = live(s, bar, "cp.async.bulk.tensor");
    const uint32_t at = shared_offset(bar);
    c.offset = shared_offset(dst);
    c.bytes = static_cast<uint32_t>(bytes);
    if (c.offset % 128 != 0 || c.offset + bytes > block().shared.size()) {
        fail("cp.async.bulk.tensor into shared offset %u..%llu: the destination is 128-byte aligned within the "
             "%zu bytes of shared memory",
             c.offset, static_cast<unsigned long long>(c.offset + bytes), block().shared.size());
    }
    const uint32_t end = c.offset + c.bytes, span = c.map.swizzle_bytes;
    for (uint32_t chunk = c.offset; chunk < end; chunk += 16) {
        const uint32_t to = swizzled(chunk, span);
        if (to < c.offset || to >= end) {
            fail("cp.async.bulk.tensor into shared offset %u..%u: the %u-byte swizzle moves bytes at %u to %u, out of "
                 "the box (a box of whole 128-byte lines stays in place)",
                 c.offset, end, span, chunk, to);
        }
    }
    for (auto& [other, b] : s.barriers) {
        if (other < end && c.offset < other + 8) {
            fail("cp.async.bulk.tensor into shared offset %u..%u, over the mbarrier at %u", c.offset, end, other);
        }
        for (const Copy& earlier : b.in_flight) {
            if (earlier.offset < end && c.offset < earlier.offset + earlier.bytes) {
                fail("cp.async.bulk.tensor into shared offset %u..%u while a copy to %u..%u is in flight", c.offset,
                     end, earlier.offset, earlier.offset + earlier.bytes);
            }
        }
        land_completed(b, c.offset, end);  // completed copies have landed before a later one starts
    }
    if (m.pending == 0 && m.delivered + c.bytes > m.announced) {
        fail("cp.async.bulk.tensor of %u bytes on the mbarrier at shared offset %u, whose phase %llu has every "
             "arrival in and expects %lld more bytes",
             c.bytes, at, static_cast<unsigned long long>(m.phase), static_cast<long long>(m.announced - m.delivered));
    }
    if (m.delivered + c.bytes - m.announced > kCountLimit) {
        fail("mbarrier at shared offset %u: tx-count below -(2^20 - 1)", at);
    }
    std::memset(dst, 0xFF, c.bytes);  // NaN until the copy lands
    m.delivered += c.bytes;
    m.in_flight.push_back(c);
    s.progress = std::chrono::steady_clock::now();
    settle(s, m, at);
}

/// bar.sync (`sync`) or bar.arrive on named barrier `id` over `threads` threads.
inline void named(int id, int threads, bool sync) {
    const Block& b = block();
    const char* op = sync ? "bar.sync" : "bar.arrive";
    if (id < 1 || id > 15) fail("%s on barrier %d: named barriers are 1 to 15 (0 is __syncthreads')", op, id);
    if (threads <= 0 || threads % 32 != 0 || static_cast<unsigned>(threads) > b.threads) {
        fail("%s %d, %d: the thread count is a multiple of 32 within the block's %u threads", op, id, threads,
             b.threads);
    }
    State& s = state();
    std::unique_lock<std::mutex> lock(s.mutex);
    NamedBarrier& n = s.named[id];
    const unsigned warps = (b.threads + 31) / 32, t = linear_thread;
    if (n.thread_generation.size() != b.threads) {
        n.thread_generation.assign(b.threads, 0);
        n.warp_arrivals.assign(warps, 0);
    }
    if (n.thread_generation[t] == n.generation + 1) {
        fail("%s %d: thread %u arrives a second time before the barrier completes (bar.arrive then another bar on "
             "the same barrier)",
             op, id, t);
    }
    if (n.arrived == 0) {
        n.threads = static_cast<unsigned>(threads);
    } else if (n.threads != static_cast<unsigned>(threads)) {
        fail("%s %d, %d: the phase began with a count of %u", op, id, threads, n.threads);
    }
    n.thread_generation[t] = n.generation + 1;
    n.arrived += 1;
    n.warp_arrivals[warp_of(t)] += 1;
    s.progress = std::chrono::steady_clock::now();
    if (n.arrived == n.threads) {
        for (unsigned w = 0; w < warps; ++w) {
            const unsigned lanes = std::min(32u, b.threads - w * 32);
            if (n.warp_arrivals[w] != 0 && n.warp_arrivals[w] != lanes) {
                fail("bar %d: warp %u took part with %u of its %u threads (bar.sync and bar.arrive are .aligned: the "
                     "whole warp executes them)",
                     id, w, n.warp_arrivals[w], lanes);
            }
        }
        std::fill(n.warp_arrivals.begin(), n.warp_arrivals.end(), 0u);
        n.arrived = 0;
        n.generation += 1;
        n.completed.notify_all();
        return;
    }
    if (!sync) return;
    const uint64_t generation = n.generation;
    await(
        lock, n.completed, [&] { return n.generation != generation; },
        [&] {
            fail("bar.sync %d, %u: nothing moved for %lld s with %u threads arrived: a deadlock", id, n.threads,
                 static_cast<long long>(kStall.count()), n.arrived);
        });
}

}  // namespace tma_impl

// The entry points hopper.cuh calls (the work is in tma_impl, whose names stay out of emu).
inline void mbarrier_init(uint64_t* bar, unsigned count) { tma_impl::init(bar, count); }
inline void mbarrier_arrive(uint64_t* bar, unsigned tx_bytes) { tma_impl::arrive(bar, tx_bytes); }
inline void mbarrier_wait(uint64_t* bar, unsigned parity) { tma_impl::wait(bar, parity); }
inline void tma_load(void* dst, const uint64_t* map_words, const int* coords, int rank, uint64_t* bar) {
    tma_impl::load(dst, map_words, coords, rank, bar);
}
inline void named_barrier(int id, int threads, bool sync) { tma_impl::named(id, threads, sync); }

}  // namespace emu
