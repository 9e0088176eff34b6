// LLaDA and Dream decoding of one sequence (full_attention_dllms.md sections
// 3-4: the official samplers of LLaDA, Fast-dLLM v1, dParallel, AdaBlock-dLLM
// and Dream) as a Sequence (runtime/sequence.h). The row x = prompt + G masks
// lives in ceil(L / page) pages from admission to the end; every forward runs
// with bidirectional attention (each query sees slots [0, L)):
//   Full          x[0, L) at positions 0..L-1: every step of the uncached
//                 loops, and each block-start forward of the cached ones;
//   PrefixCached  x[start, L): its fresh K/V overwrite the suffix slots, the
//                 prefix slots keep the block-start forward's K/V (v1 prefix cache);
//   DualCached    x[start, end): the block's fresh K/V overwrite its slots in
//                 place, prefix and suffix keep the block-start forward's (v1 dual cache).
// So the caches are the pages themselves: nothing is copied. K is stored after
// RoPE at its absolute position, which equals the official pre-RoPE cache with
// RoPE applied on the fly. The forward's fused lm_head reduction gives each
// requested position its arg-max, top-2 probabilities and entropy; the rules
// live in runtime/transfer_rules.h.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "runtime/sequence.h"

namespace fastdllm {

class FullAttentionSequence final : public Sequence {
 public:
  // Validates the prompt and the sampler's parameters (InvalidArgument
  // naming them, and saying so when the official code lacks a combination).
  FullAttentionSequence(int64_t id, std::vector<int32_t> prompt, const GenerationParams& params,
                        const ModelConfig& model, int page_size);
  ~FullAttentionSequence() override;

  int64_t max_pages() const override { return (int64_t(x_.size()) + page_size_ - 1) / page_size_; }
  int64_t max_forward_tokens() const override { return int64_t(x_.size()); }
  void attach(KVCache* kv, const PrefixCache::Match& match, int64_t blocks, PageReservation reservation) override;

  bool next(int64_t token_budget, ForwardRequest* req) override;
  void on_result(const RowResults& results) override;
  void settle() override {}
  void cancel() override { finish(); }
  bool done() const override { return done_; }

  const std::vector<int32_t>& tokens() const override { return x_; }
  int64_t prompt_len() const override { return p0_; }
  std::vector<int32_t> decoded_prefix() const override;
  std::vector<int32_t> output() const override;  // x[P:] as the official loop leaves it
  std::vector<int32_t> commit_steps(int64_t n) const override;
  int64_t num_forwards() const override { return forwards_; }
  const char* finish_reason() const override;  // "stop" when a stop token is among the ids
  std::vector<int64_t> block_lengths() const override { return block_lengths_; }

 private:
  enum class Sampler {
    LowConfidence, Fixed, Threshold, Factor, EntropyThreshold, AdaBlock,  // blocked
    MaskgitPlus, TopkMargin, Entropy, Origin,                           // Dream's own algorithms
  };
  // Where the loop is: at a block's start (a Full forward), inside a block
  // (the cache's forward), or in Dream's blockless loop over the whole row.
  enum class Phase { BlockStart, InBlock, Whole };
  // One requested position's statistics.
  struct Stat {
    int32_t pos = 0, token = 0;
    float p1 = 0.f, p2 = 0.f, entropy = 0.f, tail = 0.f;  // tail: 1 - p1
  };

  void validate_combination();
  bool blocked() const;
  bool dream_cached() const;          // Fast-dLLM v1's Dream with a cache (4.2) or AdaBlock Dream's dual loop
  int64_t candidates_from() const;    // the first position a forward's rule may commit
  int64_t adablock_window() const;    // AdaBlock's delimiter window length
  bool loop_runs_once_more() const;   // a cached forward follows the block start even when the block is full
  void start_block();
  int64_t block_masks() const;
  void begin_block_loop();            // after the block-start forward's transfer
  void end_block();
  void finish();
  int64_t adablock_length(const std::vector<Stat>& window) const;
  void transfer(const std::vector<Stat>& cand, const std::vector<uint8_t>& unmask);
  void commit(int32_t pos, int32_t token);
  void rule_step(std::vector<Stat> cand, int64_t step);  // the block rule at block step `step`
  void whole_step(const std::vector<Stat>& cand);                // Dream's blockless algorithms (4.1)
  void check_progress();

  Sampler sampler_ = Sampler::Threshold;
  bool dream_ = false;
  int page_size_ = 0;
  int64_t vocab_ = 0;
  std::vector<int32_t> x_;
  std::vector<int32_t> commit_step_;  // per generated position: its commit forward, -1 while masked
  int64_t p0_ = 0, gen_ = 0;          // P, G
  int64_t steps_ = 0;                 // the official `steps` (Dream threshold: grows, quirk 4.1)
  int64_t steps_per_block_ = 0;       // S
  std::vector<int32_t> delimiters_;

  Phase phase_ = Phase::BlockStart;
  int64_t start_ = 0, end_ = 0;       // the current block [start, end)
  int64_t generated_ = 0;             // tokens assigned to blocks so far (AdaBlock's `done`)
  int64_t step_ = 0;                  // forwards of this block so far (block start = 0) / of the whole loop
  int64_t block_forwards_ = 0;
  int64_t quota_ = 0, carry_ = 0;     // Dream confidence_threshold (4.1)
  int64_t max_whole_forwards_ = 0;
  std::vector<int64_t> block_lengths_;
  int64_t forwards_ = 0;
  bool done_ = false;

  StepKind pending_kind_ = StepKind::None;
  int64_t pending_start_ = 0;         // the pending forward's first position
  std::vector<int32_t> pending_pos_;  // the positions its rows predict, in row order
  std::vector<Stat> stats_;
  std::mt19937_64 rng_;               // Dream `origin` draws

  PageReservation reservation_;
  std::unique_ptr<PageTable> pages_;
};

}  // namespace fastdllm
