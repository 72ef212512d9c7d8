// Host emulation of the line between the generic proxy (a thread's ordinary loads and
// stores) and the async proxy (wgmma reading its operands from shared memory): a thread's
// generic writes to shared memory are seen by the async proxy only after that thread's
// fence.proxy.async (PTX ISA, "Memory Consistency Model", proxies; wgmma's operands in
// section 9.7.15.4). Kernels make such writes through dv::sm90::store_for_async, which
// records each 4-byte word here as its writer's until the writer's next fence_proxy_async;
// a wgmma reading a word still recorded stops the process, naming the writer. Plain stores
// are not seen: the wrapper is the convention for shared data that wgmma reads.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "host_cuda.h"

namespace emu {

struct ProxyWrites {
    std::vector<int32_t> writer;               // per word of shared memory: the unfenced writer, or -1
    std::vector<std::vector<uint32_t>> words;  // per thread: the words it recorded
};

inline ProxyWrites& proxy_writes() {
    static ProxyWrites p;
    return p;
}

inline void reset_proxy_writes() {
    ProxyWrites& p = proxy_writes();
    p.writer.assign(block().shared.size() / 4 + 1, -1);
    p.words.assign(block().threads, {});
}
inline const bool proxy_reset_registered = (block_resets().push_back(&reset_proxy_writes), true);

/// This thread wrote `bytes` at `p` (shared memory) for the async proxy to read. Each word
/// has one writer at a time in a kernel without races, so no lock: the barriers between the
/// writes and the reads order them, as on the device.
inline void note_generic_write(const void* p, size_t bytes) {
    const uint32_t at = shared_offset(p);
    ProxyWrites& w = proxy_writes();
    for (uint32_t word = at / 4; word < (at + bytes + 3) / 4; ++word) {
        w.writer[word] = static_cast<int32_t>(linear_thread);
        w.words[linear_thread].push_back(word);
    }
}

/// fence.proxy.async: this thread's recorded writes now reach the async proxy.
inline void fence_proxy_async() {
    ProxyWrites& w = proxy_writes();
    for (uint32_t word : w.words[linear_thread]) {
        if (w.writer[word] == static_cast<int32_t>(linear_thread)) w.writer[word] = -1;
    }
    w.words[linear_thread].clear();
}

/// Stops the process when the async proxy reads a shared byte whose generic write was not
/// fenced.
inline void check_async_read(uint32_t at, const char* what) {
    const ProxyWrites& w = proxy_writes();
    const int32_t writer = at / 4 < w.writer.size() ? w.writer[at / 4] : -1;
    if (writer >= 0) {
        std::fprintf(stderr,
                     "emulation: %s reads shared address %u, which thread %d wrote without fence.proxy.async "
                     "after it\n",
                     what, at, writer);
        std::abort();
    }
}

}  // namespace emu
