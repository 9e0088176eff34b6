#include "model/forward_plan.h"

#include <algorithm>

#include "fastdllm/error.h"

namespace fastdllm {

void plan_forward(const ForwardBatch& b, const PlanContext& ctx, ForwardPlan* p) {
  p->greedy = b.num_greedy;
  p->sampled = b.num_sample;
  p->logits = b.num_logits;
  p->sample_options = b.sample_options;
  const bool gpu = ctx.device != Device::CPU;
  const int64_t bucket = plans::token_bucket(b.num_tokens);
  p->replayable = gpu && ctx.graphs && b.num_sample == 0 && b.num_logits == 0 && bucket > 0;
  if (p->replayable) {
    p->tokens_run = bucket;
    p->seqs_run = plans::seq_bucket(b.num_seqs + 1);  // room for the padding sequence
    p->greedy_run = plans::logit_rows_bucket(b.num_greedy, bucket);
  } else {
    p->tokens_run = b.num_tokens;
    p->seqs_run = b.num_seqs;
    p->greedy_run = b.num_greedy;
  }
  const int64_t T = p->tokens_run, S = p->seqs_run, R = p->greedy_run;
  const int64_t pages = b.num_seqs > 0 ? b.kv_indptr[b.num_seqs] : 0;

  // Host copies of the CSR arrays as run (with the padding sequence).
  std::vector<int32_t> qo(size_t(S + 1));
  for (int s = 0; s <= b.num_seqs; ++s) qo[size_t(s)] = b.qo_indptr[s];
  for (int64_t s = b.num_seqs + 1; s <= S; ++s) qo[size_t(s)] = int32_t(T);

  if (gpu) {
    std::vector<int32_t> kv_len(size_t(S), 0);  // each sequence's longest key limit
    for (int s = 0; s < b.num_seqs; ++s)
      for (int32_t t = b.qo_indptr[s]; t < b.qo_indptr[s + 1]; ++t)
        kv_len[size_t(s)] = std::max(kv_len[size_t(s)], b.kv_limit[t]);
    plans::plan_attention(qo.data(), kv_len.data(), int(S), ctx.kv_heads, &p->attention);
    p->work_run = p->replayable ? plans::attention_work_capacity(T, S, ctx.kv_heads)
                                : int64_t(p->attention.work.size());
    p->parts_run = p->replayable ? plans::attention_parts_capacity(T, ctx.kv_heads) : p->attention.num_parts;
    FDL_CHECK_RT(int64_t(p->attention.work.size()) <= p->work_run && p->attention.num_parts <= p->parts_run,
                 "attention plan: ", p->attention.work.size(), " work items and ", p->attention.num_parts,
                 " partials exceed the bucket's ", p->work_run, " and ", p->parts_run);
  } else {
    p->attention = plans::AttentionPlan();
    p->work_run = p->parts_run = 0;
  }

  auto& at = p->at;
  int64_t o = 0;
  auto take = [&o](int64_t n) {
    const int64_t at_ = o;
    o += n;
    return at_;
  };
  at.tokens = take(T);
  at.positions = take(T);
  at.limits = take(T);
  at.token_seq = take(T);
  at.greedy_rows = take(R);
  at.qo_indptr = take(S + 1);
  at.kv_indptr = take(S + 1);
  at.write_offset = take(S);
  at.work = take(p->work_run * 5);
  at.work_count = take(1);
  at.part_base = take(gpu ? T : 0);
  at.part_count = take(gpu ? T : 0);
  at.sample_rows = take(b.num_sample);
  at.logit_rows = take(b.num_logits);
  at.kv_indices = take(pages);
  at.total = o;

  std::vector<int32_t>& d = p->step;
  d.assign(size_t(at.total), 0);
  const int64_t n = b.num_tokens;
  std::copy(b.tokens, b.tokens + n, d.begin() + at.tokens);
  std::copy(b.positions, b.positions + n, d.begin() + at.positions);
  std::copy(b.kv_limit, b.kv_limit + n, d.begin() + at.limits);
  for (int s = 0; s < b.num_seqs; ++s)
    std::fill(d.begin() + at.token_seq + b.qo_indptr[s], d.begin() + at.token_seq + b.qo_indptr[s + 1], s);
  // Padding tokens: the padding sequence (index num_seqs), position 0, no keys.
  std::fill(d.begin() + at.token_seq + n, d.begin() + at.token_seq + T, b.num_seqs);
  std::copy(b.greedy_rows, b.greedy_rows + b.num_greedy, d.begin() + at.greedy_rows);
  std::fill(d.begin() + at.greedy_rows + b.num_greedy, d.begin() + at.greedy_rows + R,
            b.num_greedy > 0 ? b.greedy_rows[b.num_greedy - 1] : 0);
  std::copy(qo.begin(), qo.end(), d.begin() + at.qo_indptr);
  for (int s = 0; s <= b.num_seqs; ++s) d[size_t(at.kv_indptr + s)] = b.kv_indptr[s];
  for (int64_t s = b.num_seqs + 1; s <= S; ++s) d[size_t(at.kv_indptr + s)] = int32_t(pages);
  std::copy(b.write_offset, b.write_offset + b.num_seqs, d.begin() + at.write_offset);
  std::fill(d.begin() + at.write_offset + b.num_seqs, d.begin() + at.write_offset + S, -1);
  if (gpu) {
    const auto& a = p->attention;
    for (size_t w = 0; w < a.work.size(); ++w) {
      const plans::AttentionWork& it = a.work[w];
      int32_t* dst = d.data() + at.work + 5 * int64_t(w);
      dst[0] = it.q0, dst[1] = it.nq, dst[2] = it.k0, dst[3] = it.k1, dst[4] = it.split;
    }
    d[size_t(at.work_count)] = int32_t(a.work.size());
    std::copy(a.part_base.begin(), a.part_base.end(), d.begin() + at.part_base);
    std::copy(a.part_count.begin(), a.part_count.end(), d.begin() + at.part_count);
  }
  std::copy(b.sample_rows, b.sample_rows + b.num_sample, d.begin() + at.sample_rows);
  std::copy(b.logit_rows, b.logit_rows + b.num_logits, d.begin() + at.logit_rows);
  std::copy(b.kv_indices, b.kv_indices + pages, d.begin() + at.kv_indices);
}

KVBatch kv_batch(const ForwardPlan& p, const int32_t* step) {
  KVBatch k;
  k.num_tokens = p.tokens_run;
  k.num_seqs = int(p.seqs_run);
  k.token_seq = step + p.at.token_seq;
  k.positions = step + p.at.positions;
  k.kv_limit = step + p.at.limits;
  k.qo_indptr = step + p.at.qo_indptr;
  k.kv_indptr = step + p.at.kv_indptr;
  k.kv_indices = step + p.at.kv_indices;
  k.write_offset = step + p.at.write_offset;
  return k;
}

AttentionPlanView attention_view(const ForwardPlan& p, const int32_t* step) {
  AttentionPlanView v;
  if (p.work_run == 0 && p.parts_run == 0) return v;  // the CPU's: no work list
  v.work = step + p.at.work;
  v.num_work = p.work_run;
  v.work_count = step + p.at.work_count;
  v.part_base = step + p.at.part_base;
  v.part_count = step + p.at.part_count;
  v.num_parts = p.parts_run;
  return v;
}

}  // namespace fastdllm
