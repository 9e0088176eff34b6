#include "fastdllm/paged_kv.h"

#include "fastdllm/error.h"

namespace fastdllm {

void check_kv_batch(const KVBatch& b, int page_size, int64_t num_pages, const char* what) {
  FDL_CHECK(b.qo_indptr[0] == 0 && b.kv_indptr[0] == 0 && b.qo_indptr[b.num_seqs] == b.num_tokens, what,
            ": qo_indptr must run from 0 to num_tokens (", b.num_tokens, ") and kv_indptr from 0");
  for (int s = 0; s < b.num_seqs; ++s) {
    const int32_t q0 = b.qo_indptr[s], q1 = b.qo_indptr[s + 1], p0 = b.kv_indptr[s], p1 = b.kv_indptr[s + 1];
    FDL_CHECK(q1 >= q0 && p1 >= p0, what, ": sequence ", s, " has a decreasing qo_indptr or kv_indptr");
    const int64_t slots = int64_t(p1 - p0) * page_size;
    for (int32_t p = p0; p < p1; ++p)
      FDL_CHECK(b.kv_indices[p] >= 0 && b.kv_indices[p] < num_pages, what, ": sequence ", s, " page table entry ",
                p - p0, " (page ", b.kv_indices[p], ") is outside the ", num_pages, " pages of the cache");
    FDL_CHECK(b.write_offset[s] == -1 || (b.write_offset[s] >= 0 && b.write_offset[s] + (q1 - q0) <= slots), what,
              ": sequence ", s, " writes slots [", b.write_offset[s], ", ", b.write_offset[s] + (q1 - q0),
              ") outside the ", slots, " its page table holds");
    for (int32_t t = q0; t < q1; ++t) {
      FDL_CHECK(!b.token_seq || b.token_seq[t] == s, what, ": token ", t, " is in sequence ", s,
                "'s range but token_seq says ", b.token_seq[t]);
      FDL_CHECK(b.kv_limit[t] >= 0 && b.kv_limit[t] <= slots, what, ": token ", t, " sees ", b.kv_limit[t],
                " keys, outside the ", slots, " slots of its sequence's page table");
      FDL_CHECK(b.positions[t] >= 0, what, ": negative position ", b.positions[t], " at token ", t);
    }
  }
}

}  // namespace fastdllm
