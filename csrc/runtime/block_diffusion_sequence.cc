// The decode loop of fast_dllm_v2.md section 4 as a state machine that asks
// for one forward at a time. The control flow of the spec's nested loops is
// recovered from the tokens alone: the current sub-block is the first one that
// still holds a mask, and the checks run in the spec's order ((A) stop rule,
// then "block finished -> commit", then one denoising forward).
#include "runtime/block_diffusion_sequence.h"

#include <algorithm>
#include <cmath>

#include "fastdllm/error.h"
#include "runtime/sampling.h"

namespace fastdllm {

namespace {

// Denoising forwards in the official code do not pass block_size to forward(),
// whose default (32) sets the block-causal granularity of their mask (spec 3).
constexpr int32_t kMaskBlock = 32;

// Key limit of block query q in a whole-block denoising forward: the 32-granular
// block-causal mask, capped at the block's end c + block.
int32_t full_block_limit(int64_t c, int64_t block, int64_t q) {
  const int64_t lim = ((c + q) / kMaskBlock + 1) * kMaskBlock;
  return int32_t(std::min(lim, c + block));
}

// The forward's output row that predicts block position j (token shift:
// position j reads output j - 1, the forward's first position its own).
int32_t output_row(int64_t j, int64_t first) { return int32_t(j == first ? 0 : j - first - 1); }

}  // namespace

BlockDiffusionSequence::BlockDiffusionSequence(int64_t id, std::vector<int32_t> prompt, const GenerationParams& params,
                                               const ModelConfig& model, int page_size)
    : Sequence(id, params), vocab_(model.vocab_size), page_size_(page_size), x_(std::move(prompt)), rng_(params.seed) {
  p_.validate(vocab_);
  FDL_CHECK(p_.sub_block_size > 0 && p_.block_size % p_.sub_block_size == 0, "sub_block_size (", p_.sub_block_size,
            ") must be > 0 and divide block_size (", p_.block_size, ")");
  FDL_CHECK(p_.block_size % page_size == 0, "block_size (", p_.block_size,
            ") must be a multiple of the engine's KV page_size (", page_size, "); make the Engine with a smaller page_size");
  FDL_CHECK(p_.cache == CacheMode::None, "cache='", cache_name(p_.cache),
            "' is Fast-dLLM v1's cache for LLaDA / Dream models; Fast-dLLM v2 models use use_block_cache");
  PolicyParams pp;
  pp.name = p_.sampler;
  pp.threshold = float(p_.threshold);
  pp.entropy_threshold = p_.entropy_threshold;
  pp.margin_threshold = p_.margin_threshold;
  pp.factor = p_.factor;
  policy_ = make_decode_policy(pp);
  FDL_CHECK(p_.temperature == 0.f || !policy_->needs_full_statistics(), "sampler='", p_.sampler,
            "' needs the greedy forward's statistics; use it with temperature 0");  // checks the policy's own parameters
  sampling_.temperature = p_.temperature;
  sampling_.top_p = p_.top_p;
  sampling_.top_k = p_.top_k;
  sampling_.exclude = p_.mask_id;  // a denoising step never writes the mask token
  FDL_CHECK(!x_.empty(), "the prompt is empty");
  for (size_t i = 0; i < x_.size(); ++i)
    FDL_CHECK(x_[i] >= 0 && x_[i] < vocab_, "prompt token ", x_[i], " at index ", i,
              " is outside the vocabulary [0, ", vocab_, ")");
  p0_ = int64_t(x_.size());
  if (p_.max_seq_len > 0) {
    FDL_CHECK(p0_ <= p_.max_seq_len, "the prompt has ", p0_, " tokens, more than max_seq_len=", p_.max_seq_len);
    FDL_CHECK(p0_ + p_.max_new_tokens <= p_.max_seq_len, "prompt (", p0_, " tokens) + max_new_tokens (",
              p_.max_new_tokens, ") exceeds max_seq_len=", p_.max_seq_len);
  }
  const int64_t B = p_.block_size, N = p_.max_new_tokens;
  prefill_pending_ = p0_ > B;  // strictly greater, as upstream (the P == B quirk)
  if (p_.length_rule == LengthRule::Upstream) {
    blocks_left_ = N / B;
  } else if (N == 0) {
    blocks_left_ = 0;
    prefill_pending_ = false;  // nothing to generate: not even the prefill
  } else {
    // k blocks give k*B - P0%B + 1 new tokens (the +1: the last commit's AR
    // token; with P0 % B == 0 the prefill's AR token opens the first block).
    blocks_left_ = (N - 1 + p0_ % B + B - 1) / B;
    const bool prefill_token = prefill_pending_ && p0_ % B == 0;
    if (blocks_left_ == 0 && !prefill_token) blocks_left_ = 1;
  }
  total_blocks_ = blocks_left_;
  prefill_tokens_ = prefill_pending_ ? p0_ / B * B : 0;
}

BlockDiffusionSequence::~BlockDiffusionSequence() {
  block_.reset();  // pages before the reservation that funded them
  committed_.reset();
}

int64_t BlockDiffusionSequence::max_pages() const {
  return (prefill_tokens_ + total_blocks_ * p_.block_size) / page_size_;
}

int64_t BlockDiffusionSequence::usable_prefix_blocks(const PrefixCache::Match& m) const {
  int64_t blocks = std::min(m.blocks, prefill_blocks());
  // A prompt that ends on a block boundary takes its first token from the
  // prefill's last logit: keep that block to compute unless the cache knows it.
  if (blocks > 0 && blocks == prefill_blocks() && p0_ % p_.block_size == 0 && m.next_token < 0) --blocks;
  return blocks;
}

void BlockDiffusionSequence::attach(KVCache* kv, const PrefixCache::Match& m, int64_t blocks, PageReservation reservation) {
  kv_ = kv;
  reservation_ = std::move(reservation);
  committed_ = std::make_unique<PageTable>(&kv->pool());
  block_ = std::make_unique<PageTable>(&kv->pool());
  const int64_t B = p_.block_size, pages = blocks * B / page_size_;
  for (int64_t i = 0; i < pages; ++i) committed_->share(m.pages[size_t(i)]);
  cache_tokens_.assign(x_.begin(), x_.begin() + blocks * B);
  next_tokens_.assign(size_t(blocks), -1);
  if (blocks > 0 && blocks == m.blocks) next_tokens_.back() = m.next_token;
  prefilled_ = blocks * B;
  prefix_hit_tokens_ = blocks * B;
  if (blocks > 0) kv->prefix().touch(x_.data(), blocks, int(B));
}

const char* BlockDiffusionSequence::finish_reason() const {
  if (!done_) return "";
  if (!stopped_) return "length";
  // A stop token that the tokens rule cut away did not end the output.
  const std::vector<int32_t> out = output();
  return !out.empty() && out.back() == p_.stop_id ? "stop" : "length";
}

int64_t BlockDiffusionSequence::first_stop(int64_t from) const {
  if (p_.stop_id < 0) return -1;
  for (int64_t i = from; i < int64_t(x_.size()); ++i)
    if (x_[size_t(i)] == p_.stop_id) return i;
  return -1;
}

int64_t BlockDiffusionSequence::decoded_end() const {
  int64_t i = p0_;
  for (; i < int64_t(x_.size()); ++i) {
    const int32_t t = x_[size_t(i)];
    if (t == p_.mask_id) break;
    if (t == p_.stop_id) return i + 1;
  }
  return i;
}

std::vector<int32_t> BlockDiffusionSequence::decoded_prefix() const {
  return std::vector<int32_t>(x_.begin() + p0_, x_.begin() + decoded_end());
}

bool BlockDiffusionSequence::enough_tokens() const {
  return p_.length_rule == LengthRule::Tokens && decoded_end() - p0_ >= p_.max_new_tokens;
}

void BlockDiffusionSequence::push_token(int32_t token, int64_t step) {
  x_.push_back(token);
  commit_step_.push_back(int32_t(step));
}

std::vector<int32_t> BlockDiffusionSequence::commit_steps(int64_t n) const {
  n = std::min<int64_t>(n, int64_t(commit_step_.size()));
  return std::vector<int32_t>(commit_step_.begin(), commit_step_.begin() + n);
}

std::vector<int32_t> BlockDiffusionSequence::output() const {
  std::vector<int32_t> out(x_.begin() + p0_, x_.end());
  const int64_t fs = first_stop(p0_);
  if (fs >= 0) out.resize(size_t(fs - p0_ + 1));
  if (p_.length_rule == LengthRule::Tokens && int64_t(out.size()) > p_.max_new_tokens)
    out.resize(size_t(p_.max_new_tokens));
  return out;
}

BlockDiffusionSequence::Action BlockDiffusionSequence::next_action() {
  if (done_) return Action::Finish;
  if (prefill_pending_) return Action::Prefill;
  if (enough_tokens()) return Action::Finish;  // the rest of the block would be cut away
  if (!in_block_) {
    if (blocks_left_ == 0) return Action::Finish;
    if (first_stop(p0_) >= 0) return Action::Finish;
    return Action::StartBlock;
  }
  const int64_t B = p_.block_size, S = p_.sub_block_size;
  const int32_t* blk = x_.data() + x_.size() - size_t(B);
  // (A): a stop token at or after the block's prompt tail, with no mask before it.
  for (int64_t i = pb_ - (int64_t(x_.size()) - B); i < B; ++i) {
    if (blk[i] == p_.stop_id) return Action::Finish;
    if (blk[i] == p_.mask_id) break;
  }
  int64_t first = 0;
  while (first < B && blk[first] != p_.mask_id) ++first;
  if (first == B) return Action::Commit;
  // The first sub-block holding a mask, by the sub-block alone once the block
  // cache is valid and the sub-block's first token is known (its K/V then need
  // no refresh), else by the whole block (spec 4.1).
  next_sub_block_ = int(first / S);
  next_sub_only_ = p_.use_block_cache && block_cache_valid_ && blk[next_sub_block_ * S] != p_.mask_id;
  return Action::Denoise;
}

void BlockDiffusionSequence::finish() {
  if (done_) return;
  done_ = true;
  stopped_ = first_stop(p0_) >= 0;
  block_->clear();
  committed_->clear();  // the prefix cache keeps what it registered
  reservation_.reset();
}

void BlockDiffusionSequence::settle() {
  if (!done_ && next_action() == Action::Finish) finish();
}

void BlockDiffusionSequence::take_pages(PageTable& table, int64_t tokens) {
  while (table.capacity_tokens() < tokens) table.push(reservation_.take());
}

void BlockDiffusionSequence::cache_committed() {
  const int64_t blocks = int64_t(next_tokens_.size());
  kv_->prefix().insert(cache_tokens_.data(), blocks, p_.block_size, committed_->pages().data(), next_tokens_.data());
}

bool BlockDiffusionSequence::next(int64_t budget, ForwardRequest* req) {
  const int64_t B = p_.block_size, S = p_.sub_block_size;
  for (;;) {
    switch (next_action()) {
      case Action::Finish:
        finish();
        return false;
      case Action::Prefill: {
        const int64_t remaining = prefill_tokens_ - prefilled_;
        if (remaining == 0) {  // every prompt block came from the prefix cache
          prefill_pending_ = false;
          ++forwards_;  // the spec's prefill forward, served without running
          if (p0_ % B == 0) push_token(next_tokens_.back(), forwards_);
          continue;
        }
        // Chunks of whole blocks: the block-causal prefill computes the same
        // K/V in one forward or in several.
        const int64_t len = std::min(remaining, budget / B * B);
        if (len == 0) return false;
        take_pages(*committed_, prefilled_ + len);
        req->kind = StepKind::Prefill;
        req->tokens.assign(x_.begin() + prefilled_, x_.begin() + prefilled_ + len);
        req->positions.resize(size_t(len));
        req->kv_limit.resize(size_t(len));
        for (int64_t i = 0; i < len; ++i) {
          const int64_t q = prefilled_ + i;
          req->positions[size_t(i)] = int32_t(q);
          req->kv_limit[size_t(i)] = int32_t((q / B + 1) * B);  // block-causal, bs = B
        }
        req->write_offset = int32_t(prefilled_);
        req->pages = committed_->pages();
        req->rows.clear();
        if (prefilled_ + len == prefill_tokens_ && p0_ % B == 0) req->rows.push_back(int32_t(len - 1));
        req->sample = false;  // the AR token is the argmax whatever the temperature, as upstream
        break;
      }
      case Action::StartBlock: {
        pb_ = int64_t(x_.size());
        x_.insert(x_.end(), size_t(B - pb_ % B), p_.mask_id);
        commit_step_.insert(commit_step_.end(), size_t(B - pb_ % B), -1);
        in_block_ = true;
        block_cache_valid_ = false;
        --blocks_left_;
        take_pages(*block_, B);
        continue;  // no forward yet
      }
      case Action::Commit: {
        if (budget < B) return false;
        const int64_t c = committed_->capacity_tokens();
        req->kind = StepKind::Commit;
        req->tokens.assign(x_.end() - B, x_.end());
        req->positions.resize(size_t(B));
        for (int64_t i = 0; i < B; ++i) req->positions[size_t(i)] = int32_t(c + i);
        // c is a multiple of B, so the bs = B block-causal mask lets every query
        // see the whole prefix and the whole block.
        req->kv_limit.assign(size_t(B), int32_t(c + B));
        req->write_offset = int32_t(c);
        req->pages = committed_->pages();
        req->pages.insert(req->pages.end(), block_->pages().begin(), block_->pages().end());
        req->rows.assign(1, int32_t(B - 1));
        req->sample = false;  // the greedy choice, whatever the temperature
        break;
      }
      case Action::Denoise: {
        const int64_t sb = next_sub_block_, s = sb * S;
        const bool sub_only = next_sub_only_;
        const int64_t n = sub_only ? S : B;
        if (budget < n) return false;
        const int64_t start = int64_t(x_.size()) - B, c = committed_->capacity_tokens();
        masked_.clear();
        for (int64_t j = s; j < s + S; ++j)
          if (x_[size_t(start + j)] == p_.mask_id) masked_.push_back(int32_t(j));
        req->rows.clear();
        req->positions.resize(size_t(n));
        if (!sub_only) {
          // The whole block at positions c..c+B-1 under the 32-granular block-causal mask.
          req->kind = StepKind::Denoise;
          req->tokens.assign(x_.begin() + start, x_.end());
          req->kv_limit.resize(size_t(B));
          for (int64_t q = 0; q < B; ++q) {
            req->positions[size_t(q)] = int32_t(c + q);
            req->kv_limit[size_t(q)] = full_block_limit(c, B, q);
          }
          req->write_offset = int32_t(c);
          for (int32_t j : masked_) req->rows.push_back(output_row(j, 0));
        } else {
          // The sub-block only: its fresh K/V overwrite rows [s, s+S) of the block
          // cache; the queries see the prefix and all B block entries, unmasked (spec 4.1).
          req->kind = StepKind::DenoiseSubBlock;
          req->tokens.assign(x_.begin() + start + s, x_.begin() + start + s + S);
          for (int64_t q = 0; q < S; ++q) req->positions[size_t(q)] = int32_t(c + s + q);
          req->kv_limit.assign(size_t(S), int32_t(c + B));
          req->write_offset = int32_t(c + s);
          for (int32_t j : masked_) req->rows.push_back(output_row(j, s));
        }
        req->pages = committed_->pages();
        req->pages.insert(req->pages.end(), block_->pages().begin(), block_->pages().end());
        req->sample = p_.temperature > 0.f;
        if (req->sample) req->sampling = sampling_;
        break;
      }
    }
    pending_.kind = req->kind;
    pending_.rows = req->rows;
    pending_.tokens = req->tokens;
    return true;
  }
}

// A greedy row whose softmax is not a probability came from non-finite logits
// (weights or activations that overflowed): an error naming the step, never a
// token decoded from garbage.
void BlockDiffusionSequence::check_finite(const RowResults& r, int rows) const {
  for (int k = 0; k < rows; ++k) {
    const float p = r.top2_prob[4 * k];
    const int32_t t = r.top2_index[2 * k];
    FDL_CHECK_RT(std::isfinite(p) && p >= 0.f && p <= 1.0001f && t >= 0 && t < vocab_, "the ",
                 step_kind_name(pending_.kind), " forward (the sequence's forward ", forwards_ + 1,
                 ") produced non-finite logits: the model's weights or activations overflowed");
  }
}

void BlockDiffusionSequence::on_result(const RowResults& r) {
  const int64_t B = p_.block_size;
  switch (pending_.kind) {
    case StepKind::Prefill: {
      if (!pending_.rows.empty()) check_finite(r, 1);
      const int64_t len = int64_t(pending_.tokens.size());
      cache_tokens_.insert(cache_tokens_.end(), pending_.tokens.begin(), pending_.tokens.end());
      next_tokens_.resize(next_tokens_.size() + size_t(len / B), -1);
      prefilled_ += len;
      if (!pending_.rows.empty()) {
        next_tokens_.back() = r.top2_index[0];
        push_token(r.top2_index[0], forwards_ + 1);  // the AR token from the last prompt position
      }
      if (prefilled_ == prefill_tokens_) {
        prefill_pending_ = false;
        ++forwards_;
      }
      cache_committed();
      break;
    }
    case StepKind::Commit: {
      check_finite(r, 1);
      for (int32_t p : block_->take_all()) committed_->push(p);  // level 2 -> level 1, no copy
      cache_tokens_.insert(cache_tokens_.end(), x_.end() - B, x_.end());
      next_tokens_.push_back(r.top2_index[0]);
      in_block_ = false;
      block_cache_valid_ = false;
      push_token(r.top2_index[0], forwards_ + 1);
      ++forwards_;
      cache_committed();
      break;
    }
    case StepKind::Denoise:
    case StepKind::DenoiseSubBlock: {
      const int64_t start = int64_t(x_.size()) - B;
      const int n = int(masked_.size());
      stats_.resize(size_t(n));
      if (r.candidates) {
        // Sampling: the candidates came from the device, the draws are ours, row by row.
        sampled_token_.resize(size_t(n));
        sampled_prob_.resize(size_t(n));
        sample_rows(*r.candidates, r.candidate_row0, n, vocab_ - 1, sampling_, rng_, sampled_token_.data(),
                    sampled_prob_.data());
        for (int k = 0; k < n; ++k) {
          MaskedPosition& m = stats_[size_t(k)];
          m = MaskedPosition();
          m.position = masked_[size_t(k)];
          m.token = sampled_token_[size_t(k)];
          m.confidence = sampled_prob_[size_t(k)];
        }
      } else {
        check_finite(r, n);
        for (int k = 0; k < n; ++k) {
          const int32_t* idx = r.top2_index + 2 * k;
          const float* prob = r.top2_prob + 4 * k;
          MaskedPosition& m = stats_[size_t(k)];
          m = MaskedPosition();
          m.position = masked_[size_t(k)];
          m.top1 = idx[0], m.top2 = idx[1], m.p1 = prob[0], m.p2 = prob[1], m.entropy = prob[2];
          // A denoising step never writes the mask token (deviation 1 in
          // docs/decoding.md): the best other token, with its probability under
          // the full softmax.
          const int pick = idx[0] == p_.mask_id ? 1 : 0;
          m.token = idx[pick];
          m.confidence = prob[pick];
        }
      }
      if (n > 0) {  // always, for a forward this loop chose
        unmask_.assign(size_t(n), 0);
        policy_->select(stats_.data(), n, unmask_.data());
        for (int k = 0; k < n; ++k)
          if (unmask_[size_t(k)]) {
            const int64_t at = start + masked_[size_t(k)];
            x_[size_t(at)] = stats_[size_t(k)].token;
            // a prompt position that held the mask token (the first block may start in the prompt's tail)
            if (at >= p0_) commit_step_[size_t(at - p0_)] = int32_t(forwards_ + 1);
          }
      }
      if (pending_.kind == StepKind::Denoise && p_.use_block_cache) block_cache_valid_ = true;
      ++forwards_;
      break;
    }
    default:
      break;
  }
}

}  // namespace fastdllm
