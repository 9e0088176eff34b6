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

}  // namespace

void convert_elements(const void* src, DType st, void* dst, DType dt, int64_t n) {
  if (st == dt) {
    std::memcpy(dst, src, size_t(n) * dtype_size(st));
    return;
  }
  FDL_CHECK((st == DType::F32 || st == DType::F16 || st == DType::BF16) &&
                (dt == DType::F32 || dt == DType::F16 || dt == DType::BF16),
            "convert_elements: ", dtype_name(st), " -> ", dtype_name(dt), " is not a float conversion");
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const float v = load_f32(src, st, i);
    if (dt == DType::F32)
      static_cast<float*>(dst)[i] = v;
    else if (dt == DType::BF16)
      static_cast<uint16_t*>(dst)[i] = f32_to_bf16(v);
    else
      static_cast<uint16_t*>(dst)[i] = f32_to_f16(v);
  }
}

}  // namespace fastdllm
