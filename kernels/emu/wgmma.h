// Host emulation of wgmma.mma_async and its matrix descriptors (placeholder: every entry
// point stops the process until the emulation is written).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace emu {

[[noreturn]] inline void not_emulated(const char* what) {
    std::fprintf(stderr, "emulation: %s is not emulated yet\n", what);
    std::abort();
}

inline void wgmma(int, float*, uint64_t, const uint32_t*, uint64_t, bool, int, int) { not_emulated("wgmma"); }
inline void wgmma_fence() { not_emulated("wgmma.fence"); }
inline void wgmma_commit() { not_emulated("wgmma.commit_group"); }
inline void wgmma_wait(int) { not_emulated("wgmma.wait_group"); }

}  // namespace emu
