// The AdamW kernel's parameter structs, shared by kernels/adamw.cu and the race check's
// driver; crates/kernels/src/adamw.rs mirrors them (#[repr(C)] Chunk and Scalars).
#pragma once

#include "common.cuh"

struct AdamwChunk {
    unsigned long long offset;  // first element, in the flat layout
    unsigned int len;           // elements, at most blockDim.x * a few
    unsigned int decay;         // 1 when the chunk's tensor takes weight decay
};

struct AdamwScalars {
    float beta1, beta2, eps, step_size, bias2_sqrt, decay;
};
