// Helpers shared by the CPU kernels: upcasting a row of weights to fp32, and a
// per-thread scratch area so that kernels never allocate on the decode path.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "fastdllm/dtype.h"

namespace fastdllm::cpu {

inline void load_row_f32(const void* src, DType t, int64_t offset, int64_t n, float* dst) {
  switch (t) {
    case DType::F32: {
      const float* s = static_cast<const float*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = s[i];
      break;
    }
    case DType::BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      break;
    }
    case DType::F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
      for (int64_t i = 0; i < n; ++i) dst[i] = _cvtsh_ss(s[i]);
      break;
    }
    default:
      break;
  }
}

inline void store_bf16(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);  // round to nearest even
}

// Grows to n floats and stays: per thread and slot, reused by every call. A
// kernel that needs two scratch arrays at once takes two slots. Defined out of
// line (scratch.cc, baseline flags) on purpose: the AVX-512 translation units
// include this header, and an inline definition would let them emit their own
// AVX-512 copy of std::vector code as a weak symbol that the linker may pick for
// every caller, including AVX2-only machines.
float* scratch_floats(int64_t n, int slot = 0);  // slot 0 to 3

// cs[0, half) = cos, cs[half, 2 half) = sin of pos * inv_freq[i], with the
// frequencies in fp32 as HF Qwen2 computes them. Shared by rope and
// qkv_rope_append so that both rotate identically.
void rope_cos_sin(int32_t position, const float* inv_freq, int64_t half, float* cs);

}  // namespace fastdllm::cpu
