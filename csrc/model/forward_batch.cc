#include <cstdint>
#include <vector>

#include "fastdllm/error.h"
#include "fastdllm/model.h"

namespace fastdllm {

void ForwardBatchBuilder::clear() {
  tokens_.clear(), positions_.clear(), limits_.clear(), kv_indices_.clear(), write_offset_.clear();
  qo_.assign(1, 0);
  kv_indptr_.assign(1, 0);
}

int32_t ForwardBatchBuilder::add(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
                                 const std::vector<int32_t>& kv_limit, const std::vector<int32_t>& pages,
                                 int32_t write_offset) {
  FDL_CHECK(positions.size() == tokens.size() && kv_limit.size() == tokens.size(),
            "positions and kv_limit need one entry per token");
  const int32_t base = int32_t(tokens_.size());
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  positions_.insert(positions_.end(), positions.begin(), positions.end());
  limits_.insert(limits_.end(), kv_limit.begin(), kv_limit.end());
  qo_.push_back(int32_t(tokens_.size()));
  kv_indices_.insert(kv_indices_.end(), pages.begin(), pages.end());
  kv_indptr_.push_back(int32_t(kv_indices_.size()));
  write_offset_.push_back(write_offset);
  return base;
}

ForwardBatch ForwardBatchBuilder::batch() const {
  ForwardBatch b;
  b.num_seqs = int(write_offset_.size());
  b.num_tokens = int64_t(tokens_.size());
  b.tokens = tokens_.data();
  b.positions = positions_.data();
  b.kv_limit = limits_.data();
  b.qo_indptr = qo_.data();
  b.kv_indptr = kv_indptr_.data();
  b.kv_indices = kv_indices_.data();
  b.write_offset = write_offset_.data();
  return b;
}

}  // namespace fastdllm
