#include "ops/launch_plans.h"

#include <algorithm>

namespace fastdllm::plans {

GemmKind choose_gemm(DType wt, int64_t m, int64_t n, int64_t k) {
  if ((wt != DType::BF16 && wt != DType::F16) || k % 8 || n % 8) return GemmKind::Simt;
  return m <= kSmallM ? GemmKind::Sm90SmallM : GemmKind::Sm90Large;
}

const char* gemm_kind_name(GemmKind g) {
  switch (g) {
    case GemmKind::Sm90SmallM: return "sm90_small_m";
    case GemmKind::Sm90Large: return "sm90_large";
    default: return "simt";
  }
}

AttentionSplit plan_attention(int64_t len_q, int64_t kv_heads, int64_t n_kv, int64_t target_ctas) {
  AttentionSplit s;
  s.query_tiles = (len_q + kAttnQueryTile - 1) / kAttnQueryTile;
  const int64_t ctas = std::max<int64_t>(1, kv_heads * s.query_tiles);
  const int64_t key_tiles = std::max<int64_t>(1, (n_kv + kAttnTileKeys - 1) / kAttnTileKeys);
  const int64_t want = std::clamp<int64_t>((target_ctas + ctas - 1) / ctas, 1, key_tiles);
  s.keys_per_split = (key_tiles + want - 1) / want * kAttnTileKeys;
  s.splits = std::max<int64_t>(1, (n_kv + s.keys_per_split - 1) / s.keys_per_split);
  return s;
}

int64_t logit_rows_bucket(int64_t n_logits, int64_t n) {
  if (n_logits <= 0 || n_logits >= n) return std::max<int64_t>(n_logits, 0);
  int64_t b = 1;
  while (b < n_logits) b *= 2;
  return std::min(b, n);
}

}  // namespace fastdllm::plans
