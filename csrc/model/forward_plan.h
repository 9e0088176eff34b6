// Plan / run, the plan half: from a ragged batch's composition (query and key
// lengths per sequence, output rows) decide the shapes the kernels run, how
// the attention splits its work (core/launch_plans.h), and lay out every
// per-step array in one int32 "step inputs" array:
//   tokens T | positions T | kv_limit T | token_seq T | greedy rows R |
//   qo_indptr S+1 | kv_indptr S+1 | write_offset S |
//   attention work W x 5 | work count 1 | part_base T | part_count T |
//   sample rows | logit rows | kv_indices
// On the CPU the kernels read it in place; on a GPU it goes up in one copy.
//
// A replayable plan (a GPU forward whose outputs are all greedy, at most
// plans::kGraphMaxTokens tokens) pads T, S and R to buckets so that one
// captured graph serves every batch of its bucket: padding tokens belong to an
// extra sequence that writes nothing and sees no key, padding output rows
// repeat the last real one, and the attention's grid and scratch are sized for
// the bucket's worst case (the real work count is data). kv_indices comes
// last, so its length never moves another array.
#pragma once
#include <cstdint>
#include <vector>

#include "core/launch_plans.h"
#include "fastdllm/model.h"

namespace fastdllm {

struct PlanContext {
  Device device = Device::CPU;
  int64_t kv_heads = 1;
  bool graphs = false;  // CUDA graphs are on: bucket the shapes when the outputs allow
};

struct ForwardPlan {
  // Real sizes, then the sizes the kernels run (equal unless replayable).
  int64_t greedy = 0, sampled = 0, logits = 0;
  int64_t tokens_run = 0, seqs_run = 0, greedy_run = 0;
  bool replayable = false;
  plans::AttentionPlan attention;      // GPU only (the CPU needs no work list)
  int64_t work_run = 0, parts_run = 0;  // the split kernel's grid and partial slots
  const ops::SamplingOptions* sample_options = nullptr;  // the batch's, per sampled row
  // Offsets of the arrays in `step`.
  struct Layout {
    int64_t tokens = 0, positions = 0, limits = 0, token_seq = 0, greedy_rows = 0, qo_indptr = 0, kv_indptr = 0,
            write_offset = 0, work = 0, work_count = 0, part_base = 0, part_count = 0, sample_rows = 0,
            logit_rows = 0, kv_indices = 0, total = 0;
  } at;
  std::vector<int32_t> step;
};

// Where encode writes a forward's results (device memory on a GPU): the
// greedy top-2 [greedy_run, 2] each, sampling's stats [sampled, 2], counts
// [sampled] and candidates [sampled, vocab, 2]. Logits of sampled and returned
// rows stay in the arena (ForwardRunner::kLogits), sampled rows first.
struct EncodeOutputs {
  int32_t* top2_index = nullptr;
  float* top2_prob = nullptr;
  float* cand_stats = nullptr;
  int32_t* cand_count = nullptr;
  int32_t* cand_pairs = nullptr;
};

// Builds the plan of a validated batch (Model::check_batch ran).
void plan_forward(const ForwardBatch& b, const PlanContext& ctx, ForwardPlan* plan);

// The batch's kernel view over step inputs at `step` (host or device memory).
KVBatch kv_batch(const ForwardPlan& plan, const int32_t* step);
AttentionPlanView attention_view(const ForwardPlan& plan, const int32_t* step);

}  // namespace fastdllm
