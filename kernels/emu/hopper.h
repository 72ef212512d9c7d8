// Host emulation of Hopper's asynchronous instructions that kernels/hopper.cuh wraps:
// wgmma and its matrix descriptors (wgmma.h), mbarrier, TMA and named barriers (tma.h), and
// the generic proxy's writes that the async proxy may read only after a fence (proxy.h).
#pragma once

#include "proxy.h"
#include "wgmma.h"
#include "tma.h"
