// Fast-dLLM v2 decoding of one sequence (fast_dllm_v2.md section 4, the HF
// `generate` loop): block by block, sub-blocks left to right, a confidence
// threshold deciding how many masked positions each forward unmasks, and a
// commit forward per finished block whose last logit gives the next block's
// first token. One step() = one model forward, so Python can stream.
//
// KV cache: committed tokens live in level-1 pages (PageTable committed_); the
// active block's K/V live in level-2 pages (block_) that serve as scratch for
// denoising forwards, as the sub-block cache when use_block_cache is on, and
// become level-1 pages when the block is committed.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "fastdllm/kv_cache.h"
#include "fastdllm/model.h"

namespace fastdllm {

struct GenerationParams {
  int64_t max_new_tokens = 128;
  int block_size = 32;      // B
  int sub_block_size = 8;   // S, must divide B
  float threshold = 0.9f;   // unmask every masked position with confidence > threshold (and at least one)
  bool use_block_cache = false;
  int32_t mask_id = 151665;
  int32_t stop_id = 151645;  // < 0: no stop token
  float temperature = 0.f;   // 0: greedy
  float top_p = 1.f;
  int top_k = 0;             // 0: off
  uint64_t seed = 0;
  int64_t max_seq_len = 0;   // 0: no limit beyond the cache
  // Threshold decisions of greedy denoising forwards on the model's device
  // (runtime/device_decisions.h): -1 auto (greedy on a GPU model, or as
  // FASTDLLM_DEVICE_DECISIONS=0|1 says), 0 off, 1 on (any device; greedy only).
  int device_decisions = -1;
  void validate(int64_t vocab_size, int page_size) const;  // throws InvalidArgument naming the parameter
};

enum class StepKind { Prefill, Denoise, DenoiseSubBlock, Commit, None };

class DeviceDecisions;

class Generation {
 public:
  Generation(Model& model, PagePool& pool, std::vector<int32_t> prompt, const GenerationParams& params);
  ~Generation();  // waits for forwards in flight, returns the block's pages
  Generation(const Generation&) = delete;
  Generation& operator=(const Generation&) = delete;

  // Runs the next model forward and the bookkeeping after it. Returns false,
  // without running a forward, once generation has finished.
  bool step();
  bool done() const { return done_; }

  // prompt + generated so far (masked positions hold mask_id).
  const std::vector<int32_t>& tokens() const { return x_; }
  int64_t prompt_len() const { return p0_; }
  // Generated tokens that are final: the unmasked run after the prompt, up to
  // and including the first stop token.
  std::vector<int32_t> decoded_prefix() const;
  // The generated ids after the spec's final truncation (valid once done()).
  std::vector<int32_t> output() const;
  int64_t num_forwards() const { return forwards_; }
  StepKind last_step() const { return last_step_; }
  bool decisions_on_device() const { return device_ != nullptr; }
  const char* finish_reason() const;  // "stop", "length" or "" while running

 private:
  enum class Action { Prefill, StartBlock, Denoise, Commit, Finish };
  Action next_action();
  void prefill();
  void denoise(int sb, bool sub_only);
  void denoise_on_device(int sb, bool sub_only);
  bool take_device_result();
  void commit();
  int64_t first_stop(int64_t from) const;
  void run_forward(const std::vector<int32_t>& tokens, int64_t pos0, std::vector<int32_t>& pages,
                   int64_t write_start, int64_t n_kv, const std::vector<int32_t>* kv_limit,
                   const std::vector<int32_t>& rows, bool sample);
  void ensure_block_pages();  // level-2 pages of the active block, and table_ = committed + block
  void release_block_pages();

  Model& model_;
  PagePool& pool_;
  GenerationParams p_;
  std::vector<int32_t> x_;
  int64_t p0_ = 0;
  int64_t blocks_left_ = 0;
  int64_t pb_ = 0;            // length of x before the current block was padded
  bool in_block_ = false;
  bool prefill_pending_ = false;
  bool block_cache_valid_ = false;
  int next_sub_block_ = 0;    // Denoise: the sub-block, and whether by the sub-block alone
  bool next_sub_only_ = false;
  int64_t forwards_ = 0;
  bool done_ = false;
  bool stopped_ = false;
  StepKind last_step_ = StepKind::None;

  PageTable committed_;             // level 1: prompt and finished blocks
  std::vector<int32_t> block_;      // level 2: pages of the active block
  std::vector<int32_t> table_;      // committed_ + block_, rebuilt per forward
  // Per-forward inputs and outputs, kept so that steps do not allocate once warm.
  std::vector<int32_t> tokens_, positions_, limit_, rows_, masked_;
  SamplingCandidates candidates_;    // sampling forwards
  std::vector<int32_t> argmax_;
  std::vector<float> conf_;
  std::vector<int32_t> top2_index_;  // greedy forwards: [rows, 2] (ops::lm_head_top2)
  std::vector<float> top2_prob_;
  std::mt19937_64 rng_;
  std::unique_ptr<DeviceDecisions> device_;  // decisions on the device (null: on the host)
  std::vector<int32_t> device_state_;        // the block's state as the host puts it there
};

}  // namespace fastdllm
