// exp(x) for fp32, written so that `omp simd` loops vectorize it (libm's expf
// stays scalar without -ffast-math, and softmax/SiLU call it per element; the
// kernels are compiled with -fno-trapping-math so that the clamps below become
// selects). Range reduction x = n*ln2 + r, |r| <= ln2/2 (ln2 in two parts),
// degree-6 polynomial for e^r, 2^n put in the exponent bits: relative error
// about 2e-7 (1-2 ulp, like expf). Inputs below -87.3 give 0, above 88.7 ~3e38.
#pragma once
#include <cstdint>

namespace fastdllm::cpu {

inline float fast_exp(float x) {
  const float zero_if_underflow = x < -87.3f ? 0.0f : 1.0f;
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.7f ? 88.7f : x;
  // Round x*log2(e) to the nearest integer with the 1.5*2^23 trick: the integer
  // lands in the low mantissa bits of t.
  const float t = x * 1.44269504088896341f + 12582912.0f;
  const float n = t - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // Unsigned: for a NaN input the biased exponent is garbage, and a signed
  // shift of it would be undefined behaviour (UBSan found it); the NaN in p
  // makes the result NaN either way.
  const uint32_t e = (__builtin_bit_cast(uint32_t, t) - 0x4B400000u + 127u) << 23;
  return p * __builtin_bit_cast(float, e) * zero_if_underflow;
}

}  // namespace fastdllm::cpu
