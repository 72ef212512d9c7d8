// Self-test kernels for the wgmma wrappers of hopper.cuh: they expose every thread's
// accumulators so that tests can check them against the PTX ISA's layouts, register by
// register (under the emulation here; the same kernels build for sm_90a). One warpgroup
// (128 threads) each. The test gives a byte image of shared memory and descriptors whose
// start addresses count from the image's first byte; the image is copied to the first
// 1024-byte boundary of the dynamic shared memory (where swizzle patterns start) and the
// descriptors moved there. A thread's N / 2 accumulators go in and out at
// [thread * N / 2, (thread + 1) * N / 2).
#include "hopper.cuh"

namespace {

constexpr int kWarpgroup = 128;

// Copies `bytes` (a multiple of 4) of `image` to the first 1024-byte boundary of the dynamic
// shared memory (which has 1024 bytes to spare) and returns that address. The copy is the
// generic proxy's and wgmma reads through the async proxy, hence the fence (left out only
// to show that the emulation catches it).
__device__ __forceinline__ uint32_t stage_image(const uint32_t* image, int bytes, bool fence = true) {
    DV_DYNAMIC_SHARED(unsigned char, shared);
    const uint32_t skip = (1024 - dv::sm90::shared_address(shared) % 1024) % 1024;
    uint32_t* tile = reinterpret_cast<uint32_t*>(shared + skip);
    for (int i = threadIdx.x; i < bytes / 4; i += kWarpgroup) dv::sm90::store_for_async(tile + i, image[i]);
    if (fence) dv::sm90::fence_proxy_async();
    __syncthreads();
    return dv::sm90::shared_address(tile);
}

// `steps` wgmma on `d` in one group, the s-th with its descriptors' start addresses moved
// by s times `a_step` and `b_step` bytes; the first accumulates or not, the others do.
template <int N, int kTransA, int kTransB>
__device__ __forceinline__ void chain(float* d, uint64_t a, uint64_t b, int steps, uint32_t a_step, uint32_t b_step,
                                      bool accumulate) {
    for (int s = 0; s < steps; ++s) {
        dv::sm90::wgmma_ss<N, kTransA, kTransB>(d, dv::sm90::advance(a, s * a_step), dv::sm90::advance(b, s * b_step),
                                                accumulate || s > 0);
    }
}

template <int N>
__device__ __forceinline__ void dump_ss(const uint32_t* image, int bytes, uint64_t a, uint64_t b, int trans,
                                        int steps, uint32_t a_step, uint32_t b_step, bool accumulate,
                                        const float* c, float* out) {
    const uint32_t base = stage_image(image, bytes);
    a = dv::sm90::advance(a, base);
    b = dv::sm90::advance(b, base);
    float d[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) d[i] = c[threadIdx.x * (N / 2) + i];
    dv::sm90::wgmma_fence();
    switch (trans) {
        case 0: chain<N, 0, 0>(d, a, b, steps, a_step, b_step, accumulate); break;
        case 1: chain<N, 1, 0>(d, a, b, steps, a_step, b_step, accumulate); break;
        case 2: chain<N, 0, 1>(d, a, b, steps, a_step, b_step, accumulate); break;
        default: chain<N, 1, 1>(d, a, b, steps, a_step, b_step, accumulate); break;
    }
    dv::sm90::wgmma_commit();
    dv::sm90::wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < N / 2; ++i) out[threadIdx.x * (N / 2) + i] = d[i];
}

template <int N>
__device__ __forceinline__ void dump_rs(const uint32_t* image, int bytes, const uint32_t* a_regs, uint64_t b,
                                        int trans_b, bool accumulate, const float* c, float* out) {
    b = dv::sm90::advance(b, stage_image(image, bytes));
    uint32_t a[4];
    for (int j = 0; j < 4; ++j) a[j] = a_regs[threadIdx.x * 4 + j];
    float d[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) d[i] = c[threadIdx.x * (N / 2) + i];
    dv::sm90::wgmma_fence();
    if (trans_b) {
        dv::sm90::wgmma_rs<N, 1>(d, a, b, accumulate);
    } else {
        dv::sm90::wgmma_rs<N, 0>(d, a, b, accumulate);
    }
    dv::sm90::wgmma_commit();
    dv::sm90::wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < N / 2; ++i) out[threadIdx.x * (N / 2) + i] = d[i];
}

}  // namespace

// D (64 x n, n 32, 64 or 128) = A B (+ C if `accumulate`), A and B from shared memory,
// `steps` times with the descriptors moved on (see `chain`); `trans` is trans-a + 2 trans-b.
extern "C" __global__ void wgmma_dump_ss(const uint32_t* image, int bytes, uint64_t a, uint64_t b, int n, int trans,
                                         int steps, uint32_t a_step, uint32_t b_step, int accumulate,
                                         const float* c, float* out) {
    switch (n) {
        case 32: dump_ss<32>(image, bytes, a, b, trans, steps, a_step, b_step, accumulate != 0, c, out); break;
        case 64: dump_ss<64>(image, bytes, a, b, trans, steps, a_step, b_step, accumulate != 0, c, out); break;
        default: dump_ss<128>(image, bytes, a, b, trans, steps, a_step, b_step, accumulate != 0, c, out); break;
    }
}

// As `wgmma_dump_ss` with A from registers: thread t's four words at a_regs[4 t].
extern "C" __global__ void wgmma_dump_rs(const uint32_t* image, int bytes, const uint32_t* a_regs, uint64_t b, int n,
                                         int trans_b, int accumulate, const float* c, float* out) {
    switch (n) {
        case 32: dump_rs<32>(image, bytes, a_regs, b, trans_b, accumulate != 0, c, out); break;
        case 64: dump_rs<64>(image, bytes, a_regs, b, trans_b, accumulate != 0, c, out); break;
        default: dump_rs<128>(image, bytes, a_regs, b, trans_b, accumulate != 0, c, out); break;
    }
}

// Reads accumulators before their wait, which a kernel must not: two groups of one
// m64n32k16 (K-major A and B) each, `first` = A B + C and `second` = A B, and snapshots of
// both taken after the commits, after wait_group 1 and after wait_group 0, at
// out[(snapshot * 128 + thread) * 32 + i]: i < 16 `first`, the rest `second`. With
// `write_in_flight`, `second` is written to before its wait as well. What the device gives
// there is undefined (ptxas may serialize the accesses behind the wgmma); the emulation
// reads NaN, and stops the process at the wait of registers written in flight.
extern "C" __global__ void wgmma_read_before_wait(const uint32_t* image, int bytes, uint64_t a, uint64_t b,
                                                  const float* c, int write_in_flight, float* out) {
    const uint32_t base = stage_image(image, bytes);
    a = dv::sm90::advance(a, base);
    b = dv::sm90::advance(b, base);
    float first[16], second[16];
    for (int i = 0; i < 16; ++i) {
        first[i] = c[threadIdx.x * 16 + i];
        second[i] = 0.0f;
    }
    dv::sm90::wgmma_fence();
    dv::sm90::wgmma_ss<32, 0, 0>(first, a, b, true);
    dv::sm90::wgmma_commit();
    dv::sm90::wgmma_ss<32, 0, 0>(second, a, b, false);
    dv::sm90::wgmma_commit();
    auto snapshot = [&](int at) {
        float* to = out + (at * kWarpgroup + threadIdx.x) * 32;
        for (int i = 0; i < 16; ++i) {
            to[i] = first[i];
            to[16 + i] = second[i];
        }
    };
    snapshot(0);
    dv::sm90::wgmma_wait<1>();
    snapshot(1);
    if (write_in_flight) second[0] = 0.0f;
    dv::sm90::wgmma_wait<0>();
    snapshot(2);
}

// One m64n32k16 (K-major A and B) over an image staged without fence.proxy.async, which a
// kernel must not do: the emulation stops the process at the wgmma.
extern "C" __global__ void wgmma_without_proxy_fence(const uint32_t* image, int bytes, uint64_t a, uint64_t b,
                                                     float* out) {
    const uint32_t base = stage_image(image, bytes, false);
    float d[16] = {};
    dv::sm90::wgmma_fence();
    dv::sm90::wgmma_ss<32, 0, 0>(d, dv::sm90::advance(a, base), dv::sm90::advance(b, base), false);
    dv::sm90::wgmma_commit();
    dv::sm90::wgmma_wait<0>();
    for (int i = 0; i < 16; ++i) out[threadIdx.x * 16 + i] = d[i];
}

DV_EMULATION_TABLE(wgmma_selftest_sm90, DV_EMULATED(wgmma_dump_ss), DV_EMULATED(wgmma_dump_rs),
                   DV_EMULATED(wgmma_read_before_wait), DV_EMULATED(wgmma_without_proxy_fence))
