#include "model/step_inputs.h"

#include <algorithm>

namespace fastdllm {

void pack_step_inputs(const ForwardArgs& a, int64_t pages, int64_t rows, StepInputs* s) {
  s->n = a.n;
  s->n_logits = std::max(rows, a.n_logits);
  s->pages = std::max<int64_t>(pages, a.num_pages);
  s->data.resize(size_t(s->table() + s->pages));
  int32_t* d = s->data.data();
  std::copy(a.tokens, a.tokens + a.n, d + s->tokens());
  std::copy(a.positions, a.positions + a.n, d + s->positions());
  s->slots_from_positions = true;
  for (int64_t i = 0; i < a.n; ++i) {
    const int64_t lim = a.kv_limit ? std::min<int64_t>(a.kv_limit[i], a.n_kv) : a.n_kv;
    d[s->limits() + i] = int32_t(std::max<int64_t>(lim, 0));
    if (a.positions[i] != a.write_start + i) s->slots_from_positions = false;
  }
  std::copy(a.logit_rows, a.logit_rows + a.n_logits, d + s->rows());
  std::fill(d + s->rows() + a.n_logits, d + s->rows() + s->n_logits, a.n_logits > 0 ? a.logit_rows[a.n_logits - 1] : 0);
  std::copy(a.page_table, a.page_table + a.num_pages, d + s->table());
  std::fill(d + s->table() + a.num_pages, d + s->table() + s->pages, a.num_pages > 0 ? a.page_table[0] : 0);
}

}  // namespace fastdllm
