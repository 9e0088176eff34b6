#include "core/convert.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "fastdllm/error.h"

namespace fastdllm {

namespace {

// Element i of src as fp32 (exact for every source type).
inline float load_f32(const void* src, DType t, int64_t i) {
  switch (t) {
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::F16: return _cvtsh_ss(static_cast<const uint16_t*>(src)[i]);  // F16C: x86-64-v3 baseline
    default: return static_cast<const float*>(src)[i];
  }
}

// Non-finite <=> all exponent bits set, for each float format.
inline bool non_finite_bits(const void* src, DType t, int64_t i) {
  switch (t) {
    case DType::BF16: return (static_cast<const uint16_t*>(src)[i] & 0x7f80u) == 0x7f80u;
    case DType::F16: return (static_cast<const uint16_t*>(src)[i] & 0x7c00u) == 0x7c00u;
    default: {
      uint32_t u;
      std::memcpy(&u, static_cast<const float*>(src) + i, 4);
      return (u & 0x7f800000u) == 0x7f800000u;
    }
  }
}

}  // namespace

int64_t count_non_finite(const void* data, DType t, int64_t n) {
  FDL_CHECK(is_float(t), "count_non_finite: ", dtype_name(t), " is not a float type");
  int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) bad += non_finite_bits(data, t, i);
  return bad;
}

int64_t convert_elements(const void* src, DType st, void* dst, DType dt, int64_t n) {
  FDL_CHECK(is_float(st) && is_float(dt), "convert_elements: ", dtype_name(st), " -> ", dtype_name(dt),
            " is not a float conversion");
  if (st == dt) {
    std::memcpy(dst, src, size_t(n) * dtype_size(st));
    return count_non_finite(dst, dt, n);  // reads what was just written: in cache for all but huge tensors
  }
  int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    bad += non_finite_bits(src, st, i);
    const float v = load_f32(src, st, i);
    if (dt == DType::F32)
      static_cast<float*>(dst)[i] = v;
    else if (dt == DType::BF16)
      static_cast<uint16_t*>(dst)[i] = f32_to_bf16(v);
    else
      static_cast<uint16_t*>(dst)[i] = f32_to_f16(v);
  }
  return bad;
}

}  // namespace fastdllm
