// Host emulation of mbarrier, TMA (cp.async.bulk.tensor) and named barriers (placeholder:
// every entry point stops the process until the emulation is written).
#pragma once

#include <cstdint>

#include "wgmma.h"

namespace emu {

inline void mbarrier_init(uint64_t*, unsigned) { not_emulated("mbarrier.init"); }
inline void mbarrier_arrive(uint64_t*, unsigned) { not_emulated("mbarrier.arrive"); }
inline void mbarrier_wait(uint64_t*, unsigned) { not_emulated("mbarrier.try_wait.parity"); }
inline void tma_load(void*, const uint64_t*, const int*, int, uint64_t*) { not_emulated("cp.async.bulk.tensor"); }
inline void fence_proxy_async() {}
inline void named_barrier(int, int, bool) { not_emulated("bar.sync / bar.arrive"); }

}  // namespace emu
