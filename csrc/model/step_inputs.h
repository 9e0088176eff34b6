// The per-forward host data of ForwardArgs as the kernels take it, and as a
// replayed CUDA graph expects it: one int32 array
//   [tokens n | positions n | key limits n | logit rows n_logits | page table pages]
// with every query's key limit explicit (min(kv_limit[i], n_kv)) and the page
// table padded to a fixed capacity, so that neither n_kv nor the table length
// is a kernel argument that changes from step to step. On a GPU it goes up in
// one copy; on the CPU the kernels read it in place.
#pragma once
#include <cstdint>
#include <vector>

#include "fastdllm/model.h"

namespace fastdllm {

struct StepInputs {
  std::vector<int32_t> data;
  int64_t n = 0, n_logits = 0, pages = 0;
  bool slots_from_positions = false;  // positions[i] == write_start + i: the cache write needs no start argument

  int64_t tokens() const { return 0; }
  int64_t positions() const { return n; }
  int64_t limits() const { return 2 * n; }
  int64_t rows() const { return 3 * n; }
  int64_t table() const { return 3 * n + n_logits; }
};

// pages >= a.num_pages; the padding repeats entry 0 (never read: every key
// limit is <= n_kv <= a.num_pages * page_size). rows >= a.n_logits output rows,
// the extra ones repeating the last requested row (plans::logit_rows_bucket).
void pack_step_inputs(const ForwardArgs& a, int64_t pages, int64_t rows, StepInputs* out);

}  // namespace fastdllm
