// Host emulation of the CUDA execution model, so that kernel sources in kernels/*.cu run
// as plain C++ in tests on machines without a GPU. Included (through common.cuh) only when
// DAVINCI_EMULATE is defined; nvcc builds never see it.
//
// Model: the blocks of a grid run one after another; each thread of a block is a host
// thread. __syncthreads is a barrier over the block's threads, warp collectives a barrier
// over the warp's 32 lanes with an exchange slot per lane, warpgroup collectives (wgmma)
// the same over 4 warps. Dynamic shared memory is a per-block buffer poisoned with NaN
// bytes before each block, so reads of unwritten shared data show up. What it cannot
// catch: timing, the real memory model (everything here is sequentially consistent behind
// mutexes), occupancy and resource limits, and instructions it does not define (compiling
// is the test for those).
#pragma once

#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(...)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

/// A reusable barrier (C++17 has none).
class Barrier {
  public:
    explicit Barrier(unsigned count) : count_(count) {}
    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        unsigned generation = generation_;
        if (++arrived_ == count_) {
            arrived_ = 0;
            ++generation_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return generation != generation_; });
        }
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    unsigned count_, arrived_ = 0, generation_ = 0;
};

/// The block's dynamic shared memory: on a 1024-byte boundary, as the device's window is, so
/// that swizzle patterns (which act on address bits) see the same offsets.
class SharedMemory {
  public:
    void assign(size_t bytes, unsigned char fill) {
        bytes_ = bytes;
        storage_.assign(bytes + kAlign, fill);
        const auto at = reinterpret_cast<uintptr_t>(storage_.data());
        start_ = storage_.data() + (kAlign - at % kAlign) % kAlign;
    }
    unsigned char* data() { return start_; }
    size_t size() const { return bytes_; }
    unsigned char* begin() { return start_; }
    unsigned char* end() { return start_ + bytes_; }

  private:
    static constexpr size_t kAlign = 1024;
    std::vector<unsigned char> storage_;
    unsigned char* start_ = nullptr;
    size_t bytes_ = 0;
};

/// What the threads of the running block share.
struct Block {
    dim3 grid, block;
    unsigned threads = 0;
    Barrier* block_barrier = nullptr;
    std::vector<Barrier*> warp_barriers;
    std::vector<Barrier*> warpgroup_barriers;  // one per 4 warps (128 threads), for wgmma
    std::vector<uint64_t> warp_slots;  // one 8-byte slot per thread
    std::vector<std::array<unsigned char, 64>> wide_slots;  // one 64-byte slot per thread
    SharedMemory shared;
};

inline Block& block() {
    static Block b;
    return b;
}

/// What must be forgotten between blocks and launches beyond `Block` (the state of the
/// emulated asynchronous instructions): each part registers its reset here.
inline std::vector<void (*)()>& block_resets() {
    static std::vector<void (*)()> resets;
    return resets;
}
inline void reset_block_state() {
    for (auto reset : block_resets()) reset();
}

/// One launch at a time in the whole process: the running block's state is global.
inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

inline thread_local dim3 thread_index;
inline thread_local dim3 block_index;
inline thread_local unsigned linear_thread = 0;

inline unsigned warp_of(unsigned t) { return t / 32; }

/// Exchanges a value within the warp: every lane publishes `value` and reads lane `src`'s.
template <class T>
T warp_exchange(T value, int src) {
    static_assert(sizeof(T) <= 8, "warp exchange of at most 8 bytes");
    Block& b = block();
    unsigned t = linear_thread, warp = warp_of(t);
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    b.warp_slots[t] = bits;
    b.warp_barriers[warp]->arrive_and_wait();
    unsigned lanes = std::min(32u, b.threads - warp * 32);
    unsigned source = warp * 32 + (static_cast<unsigned>(src) % 32);
    if (source >= warp * 32 + lanes) source = t;  // out of range: own value, as on the device
    T out;
    bits = b.warp_slots[source];
    std::memcpy(&out, &bits, sizeof(T));
    b.warp_barriers[warp]->arrive_and_wait();
    return out;
}

/// Every thread of the group of kSize threads from `first` publishes `value` (at most 64
/// bytes) through its slot and gets all kSize values, indexed by rank in the group; ranks
/// past the block's last thread read as zero bytes. `barrier` is the group's.
template <size_t kSize, class T>
std::array<T, kSize> group_gather(const T& value, Barrier* barrier, unsigned first) {
    static_assert(sizeof(T) <= 64 && std::is_trivially_copyable<T>::value, "a gather of at most 64 plain bytes");
    Block& b = block();
    std::memcpy(b.wide_slots[linear_thread].data(), &value, sizeof(T));
    barrier->arrive_and_wait();
    std::array<T, kSize> all{};
    const unsigned present = std::min<unsigned>(kSize, b.threads - first);
    for (unsigned rank = 0; rank < present; ++rank) std::memcpy(&all[rank], b.wide_slots[first + rank].data(), sizeof(T));
    barrier->arrive_and_wait();
    return all;
}

/// Every lane of the warp publishes `value` and gets all 32 lanes' values, indexed by lane;
/// lanes past the end of a partial warp read as zero bytes.
template <class T>
std::array<T, 32> warp_gather(const T& value) {
    const unsigned warp = warp_of(linear_thread);
    return group_gather<32>(value, block().warp_barriers[warp], warp * 32);
}

/// Every thread of a warpgroup (threads 128 g .. 128 g + 127 of the block, 4 consecutive
/// warps) publishes `value` and gets all 128, indexed by the thread's rank in the
/// warpgroup. Instructions that use it (wgmma) need the whole warpgroup: a block that does
/// not fill it stops the process, where the device would hang or fault.
template <class T>
std::array<T, 128> warpgroup_gather(const T& value) {
    Block& b = block();
    const unsigned group = linear_thread / 128;
    if ((group + 1) * 128 > b.threads) {
        std::fprintf(stderr,
                     "emulation: a warpgroup-wide instruction in a block of %u threads, whose warpgroup %u is "
                     "not whole\n",
                     b.threads, group);
        std::abort();
    }
    return group_gather<128>(value, b.warpgroup_barriers[group], group * 128);
}

/// Runs `kernel(args...)` over `grid` x `block` threads, a block at a time. The block's
/// host threads are started once per launch and step through the blocks together, with
/// the shared memory poisoned between blocks.
template <class... P, class... A>
void launch(dim3 grid, dim3 blk, size_t shared_bytes, void (*kernel)(P...), A... args) {
    std::lock_guard<std::mutex> guard(launch_mutex());
    Block& b = block();
    b.grid = grid;
    b.block = blk;
    b.threads = blk.x * blk.y * blk.z;
    Barrier block_barrier(b.threads);
    std::vector<std::unique_ptr<Barrier>> warps;
    unsigned warp_count = (b.threads + 31) / 32;
    for (unsigned w = 0; w < warp_count; ++w) warps.push_back(std::make_unique<Barrier>(std::min(32u, b.threads - w * 32)));
    b.block_barrier = &block_barrier;
    b.warp_barriers.clear();
    for (auto& w : warps) b.warp_barriers.push_back(w.get());
    std::vector<std::unique_ptr<Barrier>> warpgroups;
    for (unsigned g = 0; g < (b.threads + 127) / 128; ++g) {
        warpgroups.push_back(std::make_unique<Barrier>(std::min(128u, b.threads - g * 128)));
    }
    b.warpgroup_barriers.clear();
    for (auto& g : warpgroups) b.warpgroup_barriers.push_back(g.get());
    b.warp_slots.assign(b.threads, 0);
    b.wide_slots.assign(b.threads, {});
    b.shared.assign(shared_bytes, 0xFF);
    reset_block_state();
    // A barrier of its own between blocks, so that a kernel's barrier count is its own.
    Barrier between(b.threads);
    const size_t blocks = static_cast<size_t>(grid.x) * grid.y * grid.z;
    std::vector<std::thread> threads;
    threads.reserve(b.threads);
    for (unsigned t = 0; t < b.threads; ++t) {
        threads.emplace_back([&, t] {
            linear_thread = t;
            thread_index = dim3(t % blk.x, (t / blk.x) % blk.y, t / (blk.x * blk.y));
            for (size_t i = 0; i < blocks; ++i) {
                if (i > 0) {
                    between.arrive_and_wait();  // every thread is done with the last block
                    if (t == 0) {
                        std::fill(b.shared.begin(), b.shared.end(), 0xFF);  // NaN bytes: poison
                        reset_block_state();
                    }
                    between.arrive_and_wait();
                }
                block_index = dim3(i % grid.x, (i / grid.x) % grid.y, i / (static_cast<size_t>(grid.x) * grid.y));
                kernel(args...);
            }
        });
    }
    for (auto& th : threads) th.join();
}

/// `p`'s offset in the running block's shared memory (its address in the shared window);
/// a pointer outside it stops the process, as a bad shared address faults on the device.
inline uint32_t shared_offset(const void* p) {
    Block& b = block();
    const auto at = reinterpret_cast<uintptr_t>(p), start = reinterpret_cast<uintptr_t>(b.shared.data());
    if (at < start || at > start + b.shared.size()) {
        std::fprintf(stderr, "emulation: %p is not in the block's %zu bytes of shared memory\n", p, b.shared.size());
        std::abort();
    }
    return static_cast<uint32_t>(at - start);
}

/// A launch's shape as the Rust side describes it (`davinci_kernels::launch::Launch`).
struct Geometry {
    unsigned grid[3], block[3];
    size_t shared_bytes;
};

/// A kernel of the emulated build, launchable by name with its parameters packed as the
/// driver takes them: `params[i]` points at the i-th parameter's bytes.
struct Entry {
    const char* name;
    void (*run)(const Geometry*, void* const* params);
};

/// A parameter's value from its packed bytes, which are 8-byte aligned only (a tensor map
/// is a 64-byte aligned type).
template <class T>
T read_param(const void* bytes) {
    T value;
    std::memcpy(static_cast<void*>(&value), bytes, sizeof value);
    return value;
}

template <class... P, size_t... I>
void launch_packed(const Geometry* g, void (*kernel)(P...), void* const* params, std::index_sequence<I...>) {
    launch(dim3(g->grid[0], g->grid[1], g->grid[2]), dim3(g->block[0], g->block[1], g->block[2]), g->shared_bytes,
           kernel, read_param<std::remove_cv_t<P>>(params[I])...);
}

/// Unpacks `params` into the kernel's parameter types and launches it.
template <class... P>
void launch_packed(const Geometry* g, void (*kernel)(P...), void* const* params) {
    launch_packed(g, kernel, params, std::index_sequence_for<P...>{});
}

}  // namespace emu

#define threadIdx (::emu::thread_index)
#define blockIdx (::emu::block_index)
#define blockDim (::emu::block().block)
#define gridDim (::emu::block().grid)

inline void __syncthreads() { emu::block().block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) {
    emu::block().warp_barriers[emu::warp_of(emu::linear_thread)]->arrive_and_wait();
}

template <class T>
T __shfl_xor_sync(unsigned, T value, int lane_mask, int = 32) {
    return emu::warp_exchange(value, static_cast<int>(emu::linear_thread % 32) ^ lane_mask);
}
template <class T>
T __shfl_down_sync(unsigned, T value, unsigned delta, int = 32) {
    return emu::warp_exchange(value, static_cast<int>(emu::linear_thread % 32 + delta));
}
template <class T>
T __shfl_sync(unsigned, T value, int src, int = 32) {
    return emu::warp_exchange(value, src);
}

// CUDA's min and max of two integers (or floats) live in the global namespace.
using std::max;
using std::min;

// Separately rounded operations (never fused into an FMA; the build passes
// -ffp-contract=off as well).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }

#define DV_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::emu::block().shared.data())
// The emulated window is on a 1024-byte boundary: every alignment a kernel may ask for.
#define DV_DYNAMIC_SHARED_ALIGNED(type, name, bytes)                                   \
    static_assert((bytes) <= 1024 && 1024 % (bytes) == 0, "the window is 1024-aligned"); \
    DV_DYNAMIC_SHARED(type, name)

// A source's table of kernels for the Rust launcher: `DV_EMULATION_TABLE(stem, DV_EMULATED(k), ...)`
// defines `emu_kernels_<stem>`, which the build script declares for every source that has one.
#define DV_EMULATED(kernel) \
    ::emu::Entry { #kernel, [](const ::emu::Geometry* g, void* const* p) { ::emu::launch_packed(g, kernel, p); } }
#define DV_EMULATION_TABLE(stem, ...)                                        \
    extern "C" const ::emu::Entry* emu_kernels_##stem(size_t* count) {      \
        static const ::emu::Entry entries[] = {__VA_ARGS__};                 \
        *count = sizeof(entries) / sizeof(entries[0]);                       \
        return entries;                                                      \
    }
