#include "cpu/packed_weights.h"

namespace fastdllm::cpu {

void pack_bf16_rows(const uint16_t* src, int64_t rows, int64_t row0, int64_t k, uint16_t* dst) {
#pragma omp parallel for schedule(static) if (rows * k > (1 << 20))
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* s = src + r * k;
    const int64_t base = packed_index(row0 + r, 0, k);
    for (int64_t c = 0; c < k; ++c) dst[base + (c / 2) * kPanelRows * 2 + (c % 2)] = s[c];
  }
}

}  // namespace fastdllm::cpu
