// Host emulation of the warp-wide matrix instructions that kernels/mma.cuh wraps. Each is
// warp-collective: every lane publishes its operands, reads its warp's, and computes its
// own part of the result from the fragment layouts of the PTX ISA (see mma.cuh for the
// layouts and sections).
#pragma once

#include <cstdint>
#include <cstring>

#include "bf16.h"
#include "host_cuda.h"

namespace emu {

inline float bf16_lo(uint32_t pair) { return __bfloat162float({static_cast<uint16_t>(pair & 0xffffu)}); }
inline float bf16_hi(uint32_t pair) { return __bfloat162float({static_cast<uint16_t>(pair >> 16)}); }

struct MmaOperands {
    uint32_t a[4], b[2];
    float c[4];
};

/// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, one lane's share.
inline void mma_bf16_16x8x16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    MmaOperands mine;
    std::memcpy(mine.a, a, sizeof mine.a);
    std::memcpy(mine.b, b, sizeof mine.b);
    std::memcpy(mine.c, c, sizeof mine.c);
    const auto lanes = warp_gather(mine);
    float A[16][16], B[16][8], C[16][8];
    for (int lane = 0; lane < 32; ++lane) {
        const int g = lane / 4, t = lane % 4;
        const MmaOperands& o = lanes[lane];
        for (int j = 0; j < 4; ++j) {
            const int row = g + 8 * (j % 2), col = 2 * t + 8 * (j / 2);
            A[row][col] = bf16_lo(o.a[j]);
            A[row][col + 1] = bf16_hi(o.a[j]);
        }
        for (int j = 0; j < 2; ++j) {
            B[2 * t + 8 * j][g] = bf16_lo(o.b[j]);
            B[2 * t + 8 * j + 1][g] = bf16_hi(o.b[j]);
        }
        for (int i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * t + i % 2] = o.c[i];
    }
    const int lane = static_cast<int>(linear_thread % 32), g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float acc = C[row][col];
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
        d[i] = acc;
    }
}

/// ldmatrix.sync.aligned.m8n8.x{count}{.trans}.shared.b16, one lane's share.
inline void ldmatrix(int count, bool trans, uint32_t* r, const void* row) {
    const auto rows = warp_gather(row);
    const int lane = static_cast<int>(linear_thread % 32);
    auto element = [&](int matrix, int row_in, int col) {
        uint16_t v;
        std::memcpy(&v, static_cast<const unsigned char*>(rows[8 * matrix + row_in]) + 2 * col, 2);
        return static_cast<uint32_t>(v);
    };
    for (int j = 0; j < count; ++j) {
        if (trans) {
            r[j] = element(j, 2 * (lane % 4), lane / 4) | (element(j, 2 * (lane % 4) + 1, lane / 4) << 16);
        } else {
            r[j] = element(j, lane / 4, 2 * (lane % 4)) | (element(j, lane / 4, 2 * (lane % 4) + 1) << 16);
        }
    }
}

}  // namespace emu
