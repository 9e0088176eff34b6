#include "core/launch_plans.h"

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

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

void plan_attention(const int32_t* qo_indptr, const int32_t* kv_len, int num_seqs, int64_t kv_heads,
                    AttentionPlan* out, int64_t target_ctas) {
  kv_heads = std::max<int64_t>(kv_heads, 1);
  target_ctas = std::max<int64_t>(target_ctas, 1);
  // Total key-tile work (keys x query tiles x kv heads) spread over target_ctas.
  int64_t work_keys = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const int64_t tiles = ceil_div(qo_indptr[s + 1] - qo_indptr[s], kAttnQueryTile);
    work_keys += tiles * std::max<int32_t>(kv_len[s], 0) * kv_heads;
  }
  const int64_t kps = std::max<int64_t>(1, ceil_div(ceil_div(work_keys, target_ctas), kAttnTileKeys)) * kAttnTileKeys;
  out->keys_per_split = kps;
  out->work.clear();
  const int64_t tokens = num_seqs > 0 ? qo_indptr[num_seqs] : 0;
  out->part_base.assign(size_t(tokens), 0);
  out->part_count.assign(size_t(tokens), 0);
  int32_t part = 0;
  for (int s = 0; s < num_seqs; ++s) {
    const int32_t q_begin = qo_indptr[s], q_end = qo_indptr[s + 1];
    if (q_end <= q_begin) continue;
    const int32_t len = std::max<int32_t>(kv_len[s], 0);
    const int32_t splits = int32_t(std::max<int64_t>(1, ceil_div(len, kps)));
    for (int32_t q0 = q_begin; q0 < q_end; q0 += int32_t(kAttnQueryTile)) {
      const int32_t nq = std::min<int32_t>(int32_t(kAttnQueryTile), q_end - q0);
      for (int32_t k = 0; k < splits; ++k) {
        const int32_t k0 = int32_t(std::min<int64_t>(int64_t(k) * kps, len));
        const int32_t k1 = int32_t(std::min<int64_t>(int64_t(k + 1) * kps, len));
        out->work.push_back(AttentionWork{q0, nq, k0, k1, k});
      }
    }
    for (int32_t t = q_begin; t < q_end; ++t) {
      out->part_base[size_t(t)] = part;
      out->part_count[size_t(t)] = splits;
      part += splits;
    }
  }
  out->num_parts = part;
}

// With kps >= work_keys / target_ctas: splits_s <= kv_len_s / kps + 1, so
//   work items = sum tiles_s * splits_s <= target_ctas / kv_heads + sum tiles_s,
//   partials   = sum q_s * splits_s     <= kAttnQueryTile * target_ctas / kv_heads + tokens,
// and sum tiles_s <= tokens / kAttnQueryTile + seqs.
int64_t attention_work_capacity(int64_t tokens, int64_t seqs, int64_t kv_heads, int64_t target_ctas) {
  kv_heads = std::max<int64_t>(kv_heads, 1);
  return ceil_div(std::max<int64_t>(target_ctas, 1), kv_heads) + ceil_div(tokens, kAttnQueryTile) + seqs;
}

int64_t attention_parts_capacity(int64_t tokens, int64_t kv_heads, int64_t target_ctas) {
  kv_heads = std::max<int64_t>(kv_heads, 1);
  return kAttnQueryTile * ceil_div(std::max<int64_t>(target_ctas, 1), kv_heads) + tokens;
}

int64_t token_bucket(int64_t n) {
  if (n <= 0) return 0;
  if (n <= 64) return ceil_div(n, 8) * 8;
  if (n <= 256) return ceil_div(n, 32) * 32;
  if (n <= kGraphMaxTokens) return ceil_div(n, 64) * 64;
  return 0;
}

int64_t seq_bucket(int64_t seqs) {
  int64_t b = 1;
  while (b < seqs) b *= 2;
  return b;
}

int64_t logit_rows_bucket(int64_t n_logits, int64_t n) {
  if (n_logits <= 0 || n_logits >= n) return std::max<int64_t>(n_logits, 0);
  int64_t b = 1;
  while (b < n_logits) b *= 2;
  return std::min(b, n);
}

}  // namespace fastdllm::plans
