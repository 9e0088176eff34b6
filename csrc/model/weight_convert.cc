#include "model/weight_convert.h"

#include <cstring>

#include "cpu/load_row.h"
#include "fastdllm/error.h"

namespace fastdllm {

void convert_elements(const void* src, DType st, void* dst, DType dt, int64_t n) {
  if (st == dt) {
    std::memcpy(dst, src, size_t(n) * dtype_size(st));
    return;
  }
  constexpr int64_t kChunk = 1 << 14;
#pragma omp parallel for schedule(static) if (n > 4 * kChunk)
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = std::min(kChunk, n - c0);
    float* tmp = cpu::scratch_floats(len);
    cpu::load_row_f32(src, st, c0, len, tmp);
    switch (dt) {
      case DType::F32:
        std::memcpy(static_cast<float*>(dst) + c0, tmp, size_t(len) * 4);
        break;
      case DType::BF16: {
        uint16_t* d = static_cast<uint16_t*>(dst) + c0;
        for (int64_t i = 0; i < len; ++i) d[i] = f32_to_bf16(tmp[i]);
        break;
      }
      case DType::F16: {
        uint16_t* d = static_cast<uint16_t*>(dst) + c0;
        for (int64_t i = 0; i < len; ++i) d[i] = f32_to_f16(tmp[i]);
        break;
      }
      default:
        break;
    }
  }
}

}  // namespace fastdllm
