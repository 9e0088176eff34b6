// Continuous batching: the scheduler owns the model, the KV cache (page pool +
// prefix cache) and the sequences, waiting and running. Each step it admits
// waiting sequences whose worst-case pages fit (first come, first served),
// asks every running sequence for its next forward request (runtime/sequence.h),
// merges them into one ragged batch (tokens concatenated, per-token positions
// and key limits, CSR page tables, per-sequence write offsets), runs ONE model
// forward and hands each sequence its rows' results. Sequences in different
// phases, with different block / sub-block sizes, thresholds, block-cache
// settings, sampling parameters and stop tokens share a forward.
//
// Not thread-safe: one thread steps it (runtime/engine_loop.h); make_sequence
// is the exception (it reads only what never changes), so callers validate
// their requests on their own threads.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fastdllm/kv_cache.h"
#include "fastdllm/model.h"
#include "runtime/sequence.h"

namespace fastdllm {

struct SchedulerConfig {
  int page_size = 16;
  int64_t max_pages = 0;        // the KV budget, in pages
  DType kv_dtype = DType::F32;
  bool prefix_cache = true;
  int max_batch_size = 16;      // sequences running at once
  int64_t max_batch_tokens = 4096;  // tokens per forward (prefills are chunked to fit)
};

struct SchedulerStats {
  int64_t model_forwards = 0;     // batched forwards run
  int64_t sequence_forwards = 0;  // sum over forwards of the sequences in them
  int64_t batch_tokens = 0;       // sum over forwards of their tokens
  std::map<int64_t, int64_t> batch_size_histogram;  // sequences per forward -> forwards
  int64_t prefix_cache_hit_tokens = 0;
  int64_t pages_in_use = 0, pages_cached = 0, pages_total = 0, pages_reserved = 0;
  int64_t waiting = 0, running = 0, finished = 0, failed = 0, cancelled = 0;
  int64_t tokens_generated = 0;   // output tokens of finished sequences
};

class Scheduler {
 public:
  Scheduler(std::shared_ptr<Model> model, const SchedulerConfig& config);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  const Model& model() const { return *model_; }
  const SchedulerConfig& config() const { return config_; }

  // A validated sequence for a request: InvalidArgument naming the parameter,
  // or BudgetExceeded when its worst case exceeds the whole KV budget (it
  // could never run). Safe to call from any thread.
  std::unique_ptr<Sequence> make_sequence(int64_t id, std::vector<int32_t> prompt,
                                          const GenerationParams& params) const;
  void enqueue(std::unique_ptr<Sequence> seq);
  // Drops a waiting or running sequence (its pages are released at once);
  // false when the id is unknown (finished already).
  bool cancel(int64_t id);

  // What a step did: the sequences that ran (still going), and those that
  // ended (finished, or failed with a message), handed over to the caller.
  struct Report {
    std::vector<Sequence*> progressed;
    std::vector<std::unique_ptr<Sequence>> finished;
    std::vector<std::pair<std::unique_ptr<Sequence>, std::string>> failed;
    bool ran_forward = false;
  };
  // Admits what fits, runs one batched forward. False when nothing is running
  // or waiting.
  bool step(Report* report);
  bool idle() const { return running_.empty() && waiting_.empty(); }
  // The logits [len(tokens), vocab] of the model's own prefill over tokens
  // (positions from 0, block-causal attention with blocks of block_size),
  // chunked at block boundaries to max_batch_tokens, on pages taken from the
  // budget for the call (BudgetExceeded when too few are free now).
  void score(const std::vector<int32_t>& tokens, int block_size, float* logits);
  SchedulerStats stats() const;
  const KVCache& kv() const { return kv_; }

 private:
  void admit();
  void collect();
  void run_batch(Report* report);
  // Takes a running sequence out: cancelled (its pages freed) and handed over as failed.
  void fail(Sequence* seq, const std::string& why, Report* report);

  std::shared_ptr<Model> model_;
  SchedulerConfig config_;
  KVCache kv_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  SchedulerStats stats_;

  // The batch being built (kept across steps so that steps do not allocate once warm).
  std::vector<Sequence*> batch_seqs_;
  std::vector<ForwardRequest> requests_;
  ForwardBatchBuilder batch_;
  std::vector<int32_t> greedy_rows_, sample_rows_, greedy_at_, sample_at_;
  std::vector<ops::SamplingOptions> sample_options_;
  std::vector<int32_t> top2_index_;
  std::vector<float> top2_prob_;
  SamplingCandidates candidates_;
};

}  // namespace fastdllm
