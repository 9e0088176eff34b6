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

void pack_gate_up_rows(const uint16_t* src, int64_t rows, int64_t row0, int64_t inter, int64_t k, uint16_t* dst) {
#pragma omp parallel for schedule(static) if (rows * k > (1 << 20))
  for (int64_t b = 0; b < rows; b += kPanelRows)
    pack_bf16_rows(src + b * k, kPanelRows, gate_up_row(row0 + b, inter), k, dst);
}

}  // namespace fastdllm::cpu
