// Host emulation of Hopper's asynchronous instructions that kernels/hopper.cuh wraps:
// wgmma and its matrix descriptors (wgmma.h), and mbarrier, TMA and named barriers (tma.h).
#pragma once

#include "wgmma.h"
#include "tma.h"
