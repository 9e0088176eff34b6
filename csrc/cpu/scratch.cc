#include <vector>

#include "cpu/load_row.h"

namespace fastdllm::cpu {

float* scratch_floats(int64_t n, int slot) {
  thread_local std::vector<float> buf[2];
  if (int64_t(buf[slot].size()) < n) buf[slot].resize(size_t(n));
  return buf[slot].data();
}

}  // namespace fastdllm::cpu
