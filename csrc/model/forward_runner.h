// Plan / run, the run half: everything a forward needs besides the forward
// graph itself (Model::encode). The activation arena, grown to the largest
// forward seen and reused; on a GPU the step inputs' staging (one upload per
// forward), the outputs before download (one wait for greedy results), and the
// CUDA graphs that replay replayable plans (model/graph_cache.h).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "fastdllm/model.h"
#include "model/forward_plan.h"
#include "model/graph_cache.h"

namespace fastdllm {

class ForwardRunner {
 public:
  explicit ForwardRunner(const Model& model);
  ~ForwardRunner();

  void run(const ForwardPlan& plan, const KVStore& kv, const ForwardOutputs& out);
  Model::GraphRuns graph_runs() const { return runs_; }
  bool graphs_enabled() const { return graphs_ != nullptr; }  // CUDA, unless FASTDLLM_CUDA_GRAPHS=0

  // Arena slots (fp32): x | h | qkv | q | attn | gate_up | act | last | logits
  // (gate_up is empty when SiLU*mul runs in the gate/up GEMM's epilogue; last
  // holds the output rows' hidden states, logits the sampled / returned rows').
  enum Slot { kX, kH, kQkv, kQ, kAttn, kGateUp, kAct, kLast, kLogits, kSlots };

 private:
  void reserve_arena(int64_t tokens, int64_t rows, int64_t logit_rows);
  uint64_t graph_epoch() const;

  const Model& model_;
  Buffer act_, staging_, outputs_;
  float* slot_[kSlots] = {};
  std::unique_ptr<GraphCache> graphs_;  // CUDA only
  uint64_t buffers_epoch_ = 0;          // bumped when act_/staging_/outputs_ move
  std::vector<int32_t> top2_host_;      // greedy results as they come down from a GPU
  Model::GraphRuns runs_;
};

}  // namespace fastdllm
