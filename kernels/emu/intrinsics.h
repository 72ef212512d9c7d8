// The device's transcendental functions under the emulation, with their documented error
// rather than libm's: each result is moved off the correctly rounded value by a number of
// ulps within the CUDA Programming Guide's bound for the function (appendix "Mathematical
// Functions", single precision, default flags), chosen by a hash of the input. So a test
// that passes here passes for any device result within the bound, and a run repeated on
// the same inputs gives the same bits, as it does on the device.
//
//   expf, exp2f, rsqrtf, ex2.approx.ftz (dv::fast_exp2): 2 ulp;  logf, log2f: 1 ulp;  __expf: 2 + floor(|1.173 x|) ulp.
// Points where a function is exact in every implementation (exp(0) = 1, exp2 of an integer,
// log of 1, log2 of a power of two) are left exact. Included last, after every standard
// header, because the names below become macros.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace emu {

/// `exact` moved by -bound..=bound ulps (toward or away from zero), picked by a hash of
/// the input's bits and the function; zeros, infinities, NaN and subnormals stay as they are.
inline float within_ulps(float exact, float input, unsigned bound, uint32_t function) {
    if (bound == 0 || !std::isnormal(exact)) return exact;
    uint32_t h;
    std::memcpy(&h, &input, 4);
    h ^= function * 0x9e3779b9u;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    const int64_t offset = static_cast<int64_t>(h % (2 * bound + 1)) - bound;
    uint32_t bits;
    std::memcpy(&bits, &exact, 4);
    const int64_t moved = static_cast<int64_t>(bits & 0x7fffffffu) + offset;
    if (moved < 0x00800000 || moved >= 0x7f800000) return exact;  // would leave the normal range
    bits = (bits & 0x80000000u) | static_cast<uint32_t>(moved);
    float out;
    std::memcpy(&out, &bits, 4);
    return out;
}

inline float device_expf(float x) { return x == 0.0f ? 1.0f : within_ulps(std::exp(x), x, 2, 1); }
inline float device_exp2f(float x) { return x == std::trunc(x) ? std::exp2(x) : within_ulps(std::exp2(x), x, 2, 2); }
inline float device_logf(float x) { return x == 1.0f ? 0.0f : within_ulps(std::log(x), x, 1, 3); }
inline float device_log2f(float x) {
    int exponent;
    return std::frexp(x, &exponent) == 0.5f ? std::log2(x) : within_ulps(std::log2(x), x, 1, 4);
}
inline float device_rsqrtf(float x) { return within_ulps(1.0f / std::sqrt(x), x, 2, 5); }
inline float device_fast_expf(float x) {
    if (x == 0.0f || !(std::fabs(x) < 1e6f)) return std::exp(x);  // exact, or no normal result to move
    return within_ulps(std::exp(x), x, 2 + static_cast<unsigned>(std::fabs(1.173f * x)), 6);
}

/// ex2.approx.ftz.f32: exp2f's bound, with subnormal inputs read as zero and subnormal
/// results flushed to zero, as `.ftz` does.
inline float device_fast_exp2(float x) {
    if (x != 0.0f && std::fabs(x) < 1.17549435e-38f) x = 0.0f;
    const float y = device_exp2f(x);
    return std::fabs(y) < 1.17549435e-38f ? 0.0f : y;
}

}  // namespace emu

#define expf(x) ::emu::device_expf(x)
#define exp2f(x) ::emu::device_exp2f(x)
#define logf(x) ::emu::device_logf(x)
#define log2f(x) ::emu::device_log2f(x)
#define rsqrtf(x) ::emu::device_rsqrtf(x)
#define __expf(x) ::emu::device_fast_expf(x)
