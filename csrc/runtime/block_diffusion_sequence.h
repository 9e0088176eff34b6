// Fast-dLLM v2 decoding of one sequence (fast_dllm_v2.md section 4, the HF
// `generate` loop) as a Sequence (runtime/sequence.h): its forward requests are
// prefill, whole-block denoising, sub-block denoising and commit. Block
// by block, sub-blocks left to right; the decode policy (runtime/decode_policy.h)
// decides how many masked positions each denoising forward unmasks; a commit
// forward per finished block gives the next block's first token.
//
// KV cache: committed tokens live in level-1 pages (committed_, possibly
// shared with other sequences through the prefix cache); the active block's
// K/V live in level-2 pages (block_) that serve as scratch for denoising
// forwards, as the sub-block cache when use_block_cache is on, and become
// level-1 pages when the block is committed. Every page comes out of the
// reservation the scheduler made at admission.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/decode_policy.h"
#include "runtime/sequence.h"

namespace fastdllm {

class BlockDiffusionSequence final : public Sequence {
 public:
  // Validates the prompt and parameters (InvalidArgument naming them).
  BlockDiffusionSequence(int64_t id, std::vector<int32_t> prompt, const GenerationParams& params,
                         const ModelConfig& model, int page_size);
  ~BlockDiffusionSequence() override;

  // ---- admission (scheduler) ----
  // The most pages it can ever hold: its committed prompt blocks plus one
  // page-aligned block per generated block.
  int64_t max_pages() const override;
  int64_t max_forward_tokens() const override { return p_.block_size; }
  // The prompt blocks a prefill would commit (a prefix cache may serve them).
  int64_t prefill_blocks() const override { return prefill_tokens_ / p_.block_size; }
  // The part of a prefix-cache match this sequence can use: whole prefill
  // blocks, keeping the last one to compute when its next token is needed and
  // unknown.
  int64_t usable_prefix_blocks(const PrefixCache::Match& m) const override;
  // Takes the first `blocks` matched blocks as its committed cache, then its
  // reservation for everything else. Before the first next().
  void attach(KVCache* kv, const PrefixCache::Match& match, int64_t blocks, PageReservation reservation) override;

  // ---- stepping (scheduler) ----
  // Fills the next forward request within `token_budget` tokens; false when
  // it does not fit this step (try again) or when the sequence is done.
  bool next(int64_t token_budget, ForwardRequest* req) override;
  void on_result(const RowResults& results) override;
  // Ends the sequence now if its tokens say it is finished (after on_result,
  // so that its result is out without waiting for the next step).
  void settle() override;
  void cancel() override { finish(); }  // releases its pages at once
  bool wants_prefill() const override { return !done_ && prefill_pending_; }
  bool done() const override { return done_; }

  // ---- results ----
  const std::vector<int32_t>& tokens() const override { return x_; }  // prompt + generated so far (masks as mask_id)
  int64_t prompt_len() const override { return p0_; }
  // Generated tokens that are final: the unmasked run after the prompt, up to
  // and including the first stop token.
  std::vector<int32_t> decoded_prefix() const override;
  std::vector<int32_t> output() const override;  // the generated ids after the spec's final truncation (once done)
  // For the first n generated tokens (of output() or decoded_prefix()): the
  // forward (1-based, counted as num_forwards) that committed each, so that
  // tools can show the decode order.
  std::vector<int32_t> commit_steps(int64_t n) const override;
  int64_t num_forwards() const override { return forwards_; }  // counted as the spec counts them
  int64_t prefix_hit_tokens() const override { return prefix_hit_tokens_; }
  const char* finish_reason() const override;  // "stop", "length" or "" while running

 private:
  enum class Action { Prefill, StartBlock, Denoise, Commit, Finish };
  Action next_action();
  int64_t first_stop(int64_t from) const;
  int64_t decoded_end() const;    // where decoded_prefix() ends in tokens()
  bool enough_tokens() const;     // the tokens rule has its max_new_tokens final tokens
  void finish();
  void take_pages(PageTable& table, int64_t tokens);  // grows a table from the reservation
  void check_finite(const RowResults& r, int rows) const;
  void cache_committed();  // registers the committed blocks with the prefix cache
  void push_token(int32_t token, int64_t step);  // appends a committed token (and its forward)

  std::unique_ptr<DecodePolicy> policy_;
  int64_t vocab_ = 0;
  int page_size_ = 0;
  std::vector<int32_t> x_;
  std::vector<int32_t> commit_step_;  // per generated position of x_: its commit forward, -1 while masked
  int64_t p0_ = 0;
  int64_t prefill_tokens_ = 0;  // floor(P0/B)*B when P0 > B (strictly, as upstream), else 0
  int64_t prefilled_ = 0;       // prompt tokens committed so far (chunked prefills, prefix hits)
  bool prefill_pending_ = false;
  int64_t blocks_left_ = 0;
  int64_t total_blocks_ = 0;    // blocks the length rule allows
  int64_t pb_ = 0;              // length of x before the current block was padded
  bool in_block_ = false;
  bool block_cache_valid_ = false;
  int next_sub_block_ = 0;      // Denoise: the sub-block, and whether by the sub-block alone
  bool next_sub_only_ = false;
  int64_t forwards_ = 0;
  int64_t prefix_hit_tokens_ = 0;
  bool done_ = false;
  bool stopped_ = false;
  ForwardRequest pending_;      // the request in flight (its rows and kind)
  std::vector<int32_t> masked_;  // block positions of the pending denoising rows

  KVCache* kv_ = nullptr;
  PageReservation reservation_;
  std::unique_ptr<PageTable> committed_;  // level 1: prompt and finished blocks
  std::unique_ptr<PageTable> block_;      // level 2: the active block
  std::vector<int32_t> cache_tokens_;     // the tokens whose K/V committed_ holds, in slot order
  std::vector<int32_t> next_tokens_;      // per committed block: its AR next token, -1 when not computed
  std::mt19937_64 rng_;
  ops::SamplingOptions sampling_;         // the sampled rows' options (temperature > 0)
  std::vector<MaskedPosition> stats_;
  std::vector<uint8_t> unmask_;
  std::vector<int32_t> sampled_token_;
  std::vector<float> sampled_prob_;
};

}  // namespace fastdllm
