// Helpers shared by the CPU kernels: upcasting a row of weights to fp32, and a
// per-thread scratch area so that kernels never allocate on the decode path.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <vector>

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

// Grows to n floats and stays: per thread and slot, reused by every call. A
// kernel that needs two scratch arrays at once takes two slots.
inline float* scratch_floats(int64_t n, int slot = 0) {
  thread_local std::vector<float> buf[2];
  if (int64_t(buf[slot].size()) < n) buf[slot].resize(size_t(n));
  return buf[slot].data();
}

}  // namespace fastdllm::cpu
