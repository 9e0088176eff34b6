#include <cmath>
#include <vector>

#include "cpu/load_row.h"

namespace fastdllm::cpu {

float* scratch_floats(int64_t n, int slot) {
  thread_local std::vector<float> buf[4];
  if (int64_t(buf[slot].size()) < n) buf[slot].resize(size_t(n));
  return buf[slot].data();
}

void rope_cos_sin(int32_t position, const float* inv_freq, int64_t half, float* cs) {
  const float pos = float(position);
  for (int64_t i = 0; i < half; ++i) {
    const float f = pos * inv_freq[i];
    cs[i] = std::cos(f);
    cs[half + i] = std::sin(f);
  }
}

}  // namespace fastdllm::cpu
