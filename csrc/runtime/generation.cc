// The decode loop of fast_dllm_v2.md section 4, as a state machine with one
// model forward per step(). The control flow of the spec's nested loops is
// recovered from the tokens alone: the current sub-block is the first one that
// still holds a mask, and the checks run in the spec's order ((A) stop rule,
// then "block finished -> commit", then one denoising forward).
#include <algorithm>
#include <cmath>

#include "fastdllm/error.h"
#include "fastdllm/generation.h"
#include "fastdllm/ops.h"
#include "runtime/sampling.h"

namespace fastdllm {

namespace {
// Denoising forwards in the official code do not pass block_size to forward(),
// whose default (32) sets the block-causal granularity of their mask (spec 3).
constexpr int64_t kDenoiseMaskBlock = 32;
// Relative width within which confidences count as tied (fp32 rounding noise of
// a forward is ~1e-6 relative).
constexpr float kTieRel = 1e-5f;
}  // namespace

void GenerationParams::validate(int64_t vocab, int page_size) const {
  FDL_CHECK(max_new_tokens >= 0, "max_new_tokens must be >= 0, got ", max_new_tokens);
  FDL_CHECK(block_size > 0, "block_size must be > 0, got ", block_size);
  FDL_CHECK(sub_block_size > 0 && block_size % sub_block_size == 0, "sub_block_size (", sub_block_size,
            ") must be > 0 and divide block_size (", block_size, ")");
  FDL_CHECK(block_size % page_size == 0, "block_size (", block_size, ") must be a multiple of the engine's KV page_size (",
            page_size, "); make the Engine with a smaller page_size");
  FDL_CHECK(threshold >= 0.f && threshold <= 1.f, "threshold must be in [0, 1], got ", threshold);
  FDL_CHECK(mask_id >= 0 && mask_id < vocab, "mask_token_id ", mask_id, " is outside the vocabulary [0, ", vocab, ")");
  FDL_CHECK(stop_id < vocab, "stop_token_id ", stop_id, " is outside the vocabulary [0, ", vocab, ")");
  FDL_CHECK(temperature >= 0.f && std::isfinite(temperature), "temperature must be >= 0, got ", temperature);
  FDL_CHECK(top_p > 0.f && top_p <= 1.f, "top_p must be in (0, 1], got ", top_p);
  FDL_CHECK(top_k >= 0, "top_k must be >= 0, got ", top_k);
  FDL_CHECK(max_seq_len >= 0, "max_seq_len must be >= 0, got ", max_seq_len);
}

Generation::Generation(Model& model, PagePool& pool, std::vector<int32_t> prompt, const GenerationParams& params)
    : model_(model), pool_(pool), p_(params), x_(std::move(prompt)), committed_(&pool), rng_(params.seed) {
  const int64_t vocab = model.config().vocab_size;
  p_.validate(vocab, pool.geometry().page_size);
  FDL_CHECK(!x_.empty(), "the prompt is empty");
  for (size_t i = 0; i < x_.size(); ++i)
    FDL_CHECK(x_[i] >= 0 && x_[i] < vocab, "prompt token ", x_[i], " at index ", i,
              " is outside the vocabulary [0, ", vocab, ")");
  p0_ = int64_t(x_.size());
  if (p_.max_seq_len > 0) {
    FDL_CHECK(p0_ <= p_.max_seq_len, "the prompt has ", p0_, " tokens, more than max_seq_len=", p_.max_seq_len);
    FDL_CHECK(p0_ + p_.max_new_tokens <= p_.max_seq_len, "prompt (", p0_, " tokens) + max_new_tokens (",
              p_.max_new_tokens, ") exceeds max_seq_len=", p_.max_seq_len);
  }
  blocks_left_ = p_.max_new_tokens / p_.block_size;
  prefill_pending_ = p0_ > p_.block_size;  // strictly greater, as upstream (the P == B quirk)
}

const char* Generation::finish_reason() const {
  if (!done_) return "";
  return stopped_ ? "stop" : "length";
}

int64_t Generation::first_stop(int64_t from) const {
  if (p_.stop_id < 0) return -1;
  for (int64_t i = from; i < int64_t(x_.size()); ++i)
    if (x_[size_t(i)] == p_.stop_id) return i;
  return -1;
}

bool Generation::stop_rule_a() const {
  const int64_t fs = first_stop(pb_);
  if (fs < 0) return false;
  for (int64_t i = pb_; i < fs; ++i)
    if (x_[size_t(i)] == p_.mask_id) return false;
  return true;
}

bool Generation::block_has_mask() const {
  return std::find(x_.end() - p_.block_size, x_.end(), p_.mask_id) != x_.end();
}

std::vector<int32_t> Generation::decoded_prefix() const {
  std::vector<int32_t> out;
  for (int64_t i = p0_; i < int64_t(x_.size()); ++i) {
    const int32_t t = x_[size_t(i)];
    if (t == p_.mask_id) break;
    out.push_back(t);
    if (t == p_.stop_id) break;
  }
  return out;
}

std::vector<int32_t> Generation::output() const {
  std::vector<int32_t> out(x_.begin() + p0_, x_.end());
  const int64_t fs = first_stop(p0_);
  if (fs >= 0) out.resize(size_t(fs - p0_ + 1));
  return out;
}

Generation::Action Generation::next_action() {
  if (done_) return Action::Finish;
  if (prefill_pending_) return Action::Prefill;
  if (!in_block_) {
    if (blocks_left_ == 0) return Action::Finish;
    if (first_stop(p0_) >= 0) return Action::Finish;
    return Action::StartBlock;
  }
  if (stop_rule_a()) return Action::Finish;
  if (!block_has_mask()) return Action::Commit;
  return Action::Denoise;
}

bool Generation::step() {
  for (;;) {
    switch (next_action()) {
      case Action::Finish:
        if (!done_) {
          done_ = true;
          stopped_ = first_stop(p0_) >= 0;
          release_block_pages();
          committed_.clear();  // the cache is not kept after generation
        }
        last_step_ = StepKind::None;
        return false;
      case Action::Prefill:
        prefill();
        return true;
      case Action::StartBlock: {
        pb_ = int64_t(x_.size());
        const int64_t pad = p_.block_size - pb_ % p_.block_size;
        x_.insert(x_.end(), size_t(pad), p_.mask_id);
        in_block_ = true;
        block_cache_valid_ = false;
        --blocks_left_;
        continue;  // no forward yet
      }
      case Action::Commit:
        commit();
        return true;
      case Action::Denoise: {
        const int64_t start = int64_t(x_.size()) - p_.block_size;
        int sb = 0;
        while (std::find(x_.begin() + start + sb * p_.sub_block_size,
                         x_.begin() + start + (sb + 1) * p_.sub_block_size, p_.mask_id) ==
               x_.begin() + start + (sb + 1) * p_.sub_block_size)
          ++sb;
        denoise(sb);
        return true;
      }
    }
  }
}

void Generation::release_block_pages() {
  for (int32_t p : block_) pool_.release(p);
  block_.clear();
}

void Generation::ensure_block_pages() {
  if (block_.empty()) {
    const int64_t n_pages = p_.block_size / pool_.geometry().page_size;
    try {
      for (int64_t i = 0; i < n_pages; ++i) block_.push_back(pool_.allocate());
    } catch (...) {
      release_block_pages();
      throw;
    }
  }
  table_ = committed_.pages();
  table_.insert(table_.end(), block_.begin(), block_.end());
}

void Generation::run_forward(const std::vector<int32_t>& tokens, int64_t pos0, std::vector<int32_t>& pages,
                             int64_t write_start, int64_t n_kv, const std::vector<int32_t>* kv_limit,
                             const std::vector<int32_t>& rows, bool sample) {
  positions_.resize(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) positions_[i] = int32_t(pos0 + int64_t(i));
  ForwardArgs a;
  a.tokens = tokens.data();
  a.positions = positions_.data();
  a.n = int64_t(tokens.size());
  a.pool = &pool_;
  a.page_table = pages.data();
  a.num_pages = int(pages.size());
  a.write_start = write_start;
  a.n_kv = n_kv;
  a.kv_limit = kv_limit ? kv_limit->data() : nullptr;
  a.logit_rows = rows.data();
  a.n_logits = int64_t(rows.size());
  const size_t n = rows.size();
  argmax_.resize(n);
  conf_.resize(n);
  if (sample) {
    // Sampling: the candidates of each row come from the device, the draw is ours.
    ops::SamplingOptions o;
    o.temperature = p_.temperature;
    o.top_p = p_.top_p;
    o.top_k = p_.top_k;
    o.exclude = p_.mask_id;  // see never_predict_mask()
    model_.forward_candidates(a, o, &candidates_);
    sample_rows(candidates_, int64_t(n), model_.config().vocab_size - 1, o, rng_, argmax_.data(), conf_.data());
  } else {
    // Greedy: the lm_head fused with the reduction; slot 1 is the best token
    // other than slot 0, which never_predict_mask() falls back to.
    top2_index_.resize(2 * n);
    top2_prob_.resize(2 * n);
    model_.forward_top2(a, top2_index_.data(), top2_prob_.data());
    for (size_t r = 0; r < n; ++r) {
      argmax_[r] = top2_index_[2 * r];
      conf_[r] = top2_prob_[2 * r];
    }
  }
  ++forwards_;
}

void Generation::prefill() {
  const int64_t B = p_.block_size;
  const int64_t n = p0_ / B * B;
  committed_.reserve_tokens(n);
  table_ = committed_.pages();
  tokens_.assign(x_.begin(), x_.begin() + n);
  limit_.resize(size_t(n));
  for (int64_t q = 0; q < n; ++q) limit_[size_t(q)] = int32_t((q / B + 1) * B);  // block-causal, bs = B
  rows_.clear();
  if (p0_ % B == 0) rows_.push_back(int32_t(n - 1));
  last_step_ = StepKind::Prefill;
  prefill_pending_ = false;
  run_forward(tokens_, 0, table_, 0, n, &limit_, rows_, false);  // the greedy choice, whatever the temperature
  if (!rows_.empty()) x_.push_back(argmax_[0]);  // the AR token from the last prompt position
}

// Deviation from upstream (docs/decoding.md): a denoising step never writes the
// mask token. Upstream writes the argmax even when it is the mask id, which
// leaves the position masked; when that is the only selected position the loop
// never ends. Trained models do not predict the mask token, so this changes
// nothing for them; for random or broken weights it turns a hang into output.
// The replacement is the best other token, with its probability under the full
// softmax (the mask token's mass stays in the denominator): slot 1 of the fused
// lm_head reduction (ops::lm_head_top2).
void Generation::never_predict_mask(size_t r) {
  argmax_[r] = top2_index_[2 * r + 1];
  conf_[r] = top2_prob_[2 * r + 1];
}

void Generation::denoise(int sb) {
  const int64_t B = p_.block_size, S = p_.sub_block_size;
  const int64_t start = int64_t(x_.size()) - B;
  const int64_t c = committed_.capacity_tokens();
  const int64_t s = sb * S;
  ensure_block_pages();

  std::vector<int32_t>& masked = masked_;
  masked.clear();
  for (int64_t j = s; j < s + S; ++j)
    if (x_[size_t(start + j)] == p_.mask_id) masked.push_back(int32_t(j));

  const bool sampling = p_.temperature > 0.f;
  const bool sub_only = p_.use_block_cache && block_cache_valid_ && x_[size_t(start + s)] != p_.mask_id;
  std::vector<int32_t>& rows = rows_;
  rows.clear();
  if (!sub_only) {
    // Whole block at positions c..c+B-1; token shift: position j reads output j-1, position 0 its own.
    tokens_.assign(x_.begin() + start, x_.end());
    limit_.resize(size_t(B));
    for (int64_t q = 0; q < B; ++q)
      limit_[size_t(q)] = int32_t(std::min(c + B, ((c + q) / kDenoiseMaskBlock + 1) * kDenoiseMaskBlock));
    for (int32_t j : masked) rows.push_back(j == 0 ? 0 : j - 1);
    last_step_ = StepKind::Denoise;
    run_forward(tokens_, c, table_, c, c + B, &limit_, rows, sampling);
    if (p_.use_block_cache) block_cache_valid_ = true;
  } else {
    // Sub-block only: its fresh K/V overwrite rows [s, s+S) of the block cache;
    // the queries see the prefix and all B block entries, unmasked (spec 4.1).
    tokens_.assign(x_.begin() + start + s, x_.begin() + start + s + S);
    for (int32_t j : masked) rows.push_back(j == s ? 0 : int32_t(j - s - 1));
    last_step_ = StepKind::DenoiseSubBlock;
    run_forward(tokens_, c + s, table_, c + s, c + B, nullptr, rows, sampling);
  }

  // Confidence-threshold unmasking over the masked positions of the sub-block.
  // (Sampling never draws the mask token: it is excluded from the candidates.)
  if (!sampling)
    for (size_t r = 0; r < rows.size(); ++r)
      if (argmax_[r] == p_.mask_id) never_predict_mask(r);
  // The always-unmask-one rule picks the first position whose confidence is
  // within kTieRel of the maximum (deviation 2 in docs/decoding.md): an all-mask
  // block (the P == B case) gives B identical inputs whose confidences differ
  // only by rounding; in bf16 upstream they tie exactly and the first wins.
  float top = conf_[0];
  for (size_t r = 1; r < masked.size(); ++r) top = std::max(top, conf_[r]);
  size_t best = 0;
  while (conf_[best] < top * (1.0f - kTieRel)) ++best;
  for (size_t r = 0; r < masked.size(); ++r)
    if (conf_[r] > p_.threshold || r == best) x_[size_t(start + masked[r])] = argmax_[r];
}

void Generation::commit() {
  const int64_t B = p_.block_size;
  const int64_t start = int64_t(x_.size()) - B;
  const int64_t c = committed_.capacity_tokens();
  ensure_block_pages();
  tokens_.assign(x_.begin() + start, x_.end());
  rows_.assign(1, int32_t(B - 1));
  // c is a multiple of B, so the bs = B block-causal mask lets every query see
  // the whole prefix and the whole block: no mask needed.
  last_step_ = StepKind::Commit;
  run_forward(tokens_, c, table_, c, c + B, nullptr, rows_, false);  // the greedy choice, whatever the temperature
  for (int32_t p : block_) committed_.push(p);  // level 2 -> level 1, no copy
  block_.clear();
  in_block_ = false;
  block_cache_valid_ = false;
  x_.push_back(argmax_[0]);
}

}  // namespace fastdllm
