// One request's decoding, as the scheduler sees it: a state machine that runs
// no forward itself. The scheduler (runtime/scheduler.h) asks it for its next
// forward request, merges it into a batch with other sequences', and hands
// back its rows' results. Two kinds implement it:
//   BlockDiffusionSequence  Fast-dLLM v2 (fast_dllm_v2.md section 4): block-causal,
//                           committed blocks in level-1 pages, the active block in level 2;
//   FullAttentionSequence   LLaDA and Dream (full_attention_dllms.md): bidirectional
//                           attention over the whole row, the official samplers and
//                           Fast-dLLM v1's prefix / dual caches as pages.
// make_sequence() picks the kind from GenerationParams::family.
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "fastdllm/kv_cache.h"
#include "fastdllm/model.h"

namespace fastdllm {

// What max_new_tokens means for Fast-dLLM v2 (docs/decoding.md, Lengths).
enum class LengthRule {
  Tokens,    // up to max_new_tokens new tokens: as many blocks as that needs, cut there
  Upstream,  // the official loop's: max_new_tokens // B blocks, counted from the first block after the prompt
};

// The model family decides the decode loop (not the forward: every family runs
// the same Qwen2-shaped graph, only its key limits differ).
enum class ModelFamily { FastDllmV2, LLaDA, Dream };
// Fast-dLLM v1's approximate caches for the full-attention families.
enum class CacheMode { None, Prefix, Dual };

struct GenerationParams {
  ModelFamily family = ModelFamily::FastDllmV2;
  int64_t max_new_tokens = 128;
  LengthRule length_rule = LengthRule::Tokens;
  int block_size = 32;      // B (AdaBlock: the initial block length)
  int sub_block_size = 8;   // S, must divide B (Fast-dLLM v2)
  // The decode rule: Fast-dLLM v2 "threshold" | "entropy_threshold" |
  // "margin_threshold" | "factor"; the full-attention families' samplers are
  // listed in full_attention_dllms.md section 6.
  std::string sampler = "threshold";
  // Doubles: the LLaDA family's rules compare float64 confidences with them.
  double threshold = 0.9;          // confidence threshold
  double entropy_threshold = 0.5;  // nats
  double margin_threshold = 0.5;   // top-1 minus top-2 probability
  double factor = 1.0;             // Fast-dLLM v1's parallel factor
  int64_t steps = 0;               // full-attention samplers: the official `steps` (0: max_new_tokens)
  CacheMode cache = CacheMode::None;
  std::vector<int32_t> delimiter_ids;  // AdaBlock; empty: the family's default
  double delimiter_threshold = std::numeric_limits<double>::infinity();
  bool use_block_cache = false;
  int32_t mask_id = 151665;
  int32_t stop_id = 151645;  // < 0: no stop token
  float temperature = 0.f;   // 0: greedy
  float top_p = 1.f;
  int top_k = 0;             // 0: off
  uint64_t seed = 0;
  int64_t max_seq_len = 0;   // 0: no limit beyond the cache
  static constexpr int64_t kMaxSteps = int64_t(1) << 20;
  // Throws InvalidArgument naming the parameter (the checks every family shares).
  void validate(int64_t vocab_size) const;
};

const char* family_name(ModelFamily f);
const char* cache_name(CacheMode c);

enum class StepKind { Prefill, Denoise, DenoiseSubBlock, Commit, Full, PrefixCached, DualCached, None };
const char* step_kind_name(StepKind k);

// What a sequence asks of the next batched forward: its tokens at their
// positions, written to cache slots from write_offset on, each seeing slots
// [0, kv_limit) of the sequence's page table; the output rows (indices into
// tokens) it needs, greedy top-2 or sampled.
struct ForwardRequest {
  StepKind kind = StepKind::None;
  std::vector<int32_t> tokens, positions, kv_limit;
  int32_t write_offset = 0;
  std::vector<int32_t> pages;  // the sequence's page table
  std::vector<int32_t> rows;
  bool sample = false;
  ops::SamplingOptions sampling;
};

// Its rows' results, in the order of ForwardRequest::rows.
struct RowResults {
  const int32_t* top2_index = nullptr;  // greedy: [rows, 2]
  const float* top2_prob = nullptr;     // greedy: [rows, 4] (p1, p2, entropy, 1 - p1)
  const SamplingCandidates* candidates = nullptr;  // sampled: rows candidate_row0 ..
  int64_t candidate_row0 = 0;
};

class Sequence {
 public:
  virtual ~Sequence() = default;
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;

  int64_t id() const { return id_; }
  const GenerationParams& params() const { return p_; }

  // ---- admission (scheduler) ----
  virtual int64_t max_pages() const = 0;          // the most pages it can ever hold
  virtual int64_t max_forward_tokens() const = 0;  // the largest forward it will ask for
  // The prompt blocks a prefill would commit (a prefix cache may serve them),
  // and the part of a match it can use.
  virtual int64_t prefill_blocks() const { return 0; }
  virtual int64_t usable_prefix_blocks(const PrefixCache::Match&) const { return 0; }
  // Takes the first `blocks` matched blocks, then its reservation for the
  // rest. Before the first next().
  virtual void attach(KVCache* kv, const PrefixCache::Match& match, int64_t blocks, PageReservation reservation) = 0;

  // ---- stepping (scheduler) ----
  // Fills the next forward request within `token_budget` tokens; false when
  // it does not fit this step (try again) or when the sequence is done.
  virtual bool next(int64_t token_budget, ForwardRequest* req) = 0;
  virtual void on_result(const RowResults& results) = 0;
  // Ends the sequence now if its tokens say it is finished.
  virtual void settle() = 0;
  virtual void cancel() = 0;  // releases its pages at once
  virtual bool wants_prefill() const { return false; }
  virtual bool done() const = 0;

  // ---- results ----
  virtual const std::vector<int32_t>& tokens() const = 0;  // prompt + generated so far (masks as mask_id)
  virtual int64_t prompt_len() const = 0;
  virtual std::vector<int32_t> decoded_prefix() const = 0;  // the final generated tokens so far
  virtual std::vector<int32_t> output() const = 0;          // the generated ids (once done)
  // The forward (1-based, counted as num_forwards) that committed each of the
  // first n generated tokens.
  virtual std::vector<int32_t> commit_steps(int64_t n) const = 0;
  virtual int64_t num_forwards() const = 0;  // counted as the spec counts them
  virtual int64_t prefix_hit_tokens() const { return 0; }
  // The length of each block so far where the sampler has blocks of its own
  // choosing (LLaDA / Dream; AdaBlock's block history); empty otherwise.
  virtual std::vector<int64_t> block_lengths() const { return {}; }
  virtual const char* finish_reason() const = 0;  // "stop", "length" or "" while running

 protected:
  Sequence(int64_t id, const GenerationParams& params) : id_(id), p_(params) {}
  int64_t id_;
  GenerationParams p_;
};

// A validated sequence of the kind params.family asks for (InvalidArgument
// naming the parameter).
std::unique_ptr<Sequence> make_sequence(int64_t id, std::vector<int32_t> prompt, const GenerationParams& params,
                                        const ModelConfig& model, int page_size);

}  // namespace fastdllm
