#include "cpu/int_weights.h"

namespace fastdllm::cpu {

void pack_int_rows(const uint8_t* q, const float* scales, const float* zeros, int64_t rows, int64_t row0,
                   int64_t inter, const IntPackTarget& d) {
  const int64_t kp_n = d.k / 2, pb = int_pair_bytes(d.bits);
#pragma omp parallel for schedule(static) if (rows * d.k > (1 << 20))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pr = inter ? gate_up_row(row0 + r, inter) : row0 + r;
    const int64_t panel = pr / kPanelRows, l = pr % kPanelRows;
    const uint8_t* src = q + r * d.k;
    uint8_t* base = d.codes + panel * kp_n * pb;
    for (int64_t kp = 0; kp < kp_n; ++kp) {
      uint8_t* p = base + kp * pb;
      if (d.bits == 4)
        p[l] = uint8_t((src[2 * kp] & 0xF) | (src[2 * kp + 1] & 0xF) << 4);
      else {
        p[l] = src[2 * kp];
        p[kPanelRows + l] = src[2 * kp + 1];
      }
    }
    for (int64_t g = 0; g < d.groups; ++g) {
      const int64_t at = (panel * d.groups + g) * kPanelRows + l;
      const float s = scales[r * d.groups + g];
      d.scales[at] = s;
      d.zero_scales[at] = s * zeros[r * d.groups + g];
    }
  }
}

}  // namespace fastdllm::cpu
