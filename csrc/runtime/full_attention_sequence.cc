// The official loops of full_attention_dllms.md as one state machine. Which
// loop runs is fixed at construction from (family, sampler, cache); the
// section each branch follows is named where it decides something.
#include "runtime/full_attention_sequence.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "fastdllm/error.h"
#include "runtime/transfer_rules.h"

namespace fastdllm {

namespace {

// AdaBlock-dLLM's Dream delimiters, hard-coded in its sampler (section 4.4).
const std::vector<int32_t> kDreamDelimiters = {198,  271,  280,  319,  340,  382,  401,  532,  624,  630,  692,   698,
                                               921,  1248, 1837, 1939, 2219, 2533, 3276, 3876, 4894, 5267, 14750, 68327};
const std::vector<int32_t> kLLaDADelimiters = {198};  // "\n", generate_adablock's default (section 3.4)

}  // namespace

FullAttentionSequence::FullAttentionSequence(int64_t id, std::vector<int32_t> prompt, const GenerationParams& params,
                                             const ModelConfig& model, int page_size)
    : Sequence(id, params), page_size_(page_size), vocab_(model.vocab_size), x_(std::move(prompt)), rng_(params.seed) {
  p_.validate(vocab_);
  dream_ = p_.family == ModelFamily::Dream;
  FDL_CHECK(!x_.empty(), "the prompt is empty");
  for (size_t i = 0; i < x_.size(); ++i)
    FDL_CHECK(x_[i] >= 0 && x_[i] < vocab_, "prompt token ", x_[i], " at index ", i, " is outside the vocabulary [0, ",
              vocab_, ")");
  p0_ = int64_t(x_.size());
  gen_ = p_.max_new_tokens;
  if (p_.max_seq_len > 0)
    FDL_CHECK(p0_ + gen_ <= p_.max_seq_len, "prompt (", p0_, " tokens) + max_new_tokens (", gen_,
              ") exceeds max_seq_len=", p_.max_seq_len);
  FDL_CHECK(p_.temperature == 0.f, "temperature must be 0 for the ", family_name(p_.family),
            " samplers: the official LLaDA / Dream loops are reproduced greedily (full_attention_dllms.md), got ",
            p_.temperature);
  const std::string& s = p_.sampler;
  if (s == "low_confidence") sampler_ = Sampler::LowConfidence;
  else if (s == "fixed") sampler_ = Sampler::Fixed;
  else if (s == "threshold") sampler_ = Sampler::Threshold;
  else if (s == "factor") sampler_ = Sampler::Factor;
  else if (s == "entropy_threshold") sampler_ = Sampler::EntropyThreshold;
  else if (s == "adablock") sampler_ = Sampler::AdaBlock;
  else if (s == "maskgit_plus") sampler_ = Sampler::MaskgitPlus;
  else if (s == "topk_margin") sampler_ = Sampler::TopkMargin;
  else if (s == "entropy") sampler_ = Sampler::Entropy;
  else if (s == "origin") sampler_ = Sampler::Origin;
  else
    throw InvalidArgument("sampler '" + s + "' is not known for " + family_name(p_.family) + " models; known: " +
                          (dream_ ? "maskgit_plus, topk_margin, entropy, origin, threshold, entropy_threshold, adablock"
                                  : "low_confidence, fixed, threshold, factor, entropy_threshold, adablock"));
  steps_ = p_.steps > 0 ? p_.steps : gen_;
  validate_combination();
  delimiters_ = !p_.delimiter_ids.empty() ? p_.delimiter_ids : dream_ ? kDreamDelimiters : kLLaDADelimiters;
  x_.insert(x_.end(), size_t(gen_), p_.mask_id);
  commit_step_.assign(size_t(gen_), -1);
  if (gen_ == 0) return;  // nothing to generate: no forward runs (next() finishes)
  if (blocked()) {
    if (sampler_ != Sampler::AdaBlock) steps_per_block_ = steps_ / (gen_ / p_.block_size);
    return;
  }
  phase_ = Phase::Whole;
  if (sampler_ == Sampler::Threshold) {  // Dream confidence_threshold (4.1): over the whole row's masks
    int64_t masks = 0;
    for (int32_t t : x_) masks += t == p_.mask_id;
    FDL_CHECK(masks % steps_ == 0, "sampler='threshold' without a cache needs the masked positions (", masks,
              ") to be a multiple of steps (", steps_, "), as Dream's confidence_threshold asserts");
    quota_ = masks / steps_;
    max_whole_forwards_ = steps_ + masks + 2;  // each added step commits at least one position
  }
}

FullAttentionSequence::~FullAttentionSequence() { pages_.reset(); }

bool FullAttentionSequence::blocked() const {
  if (!dream_) return true;
  switch (sampler_) {
    case Sampler::EntropyThreshold:
    case Sampler::AdaBlock: return true;
    default: return p_.cache != CacheMode::None;  // Dream's own algorithms: blocks only with Fast-dLLM v1's cache
  }
}

bool FullAttentionSequence::dream_cached() const { return dream_ && p_.cache != CacheMode::None; }

int64_t FullAttentionSequence::candidates_from() const {
  // A forward over the whole row takes every mask before the block's end as a
  // candidate (the official `mask_index[:, end:] = 0`: prompt masks too); a
  // cached forward only the block's. Fast-dLLM v1's Dream cache decides only
  // the block's first position at its start (4.2).
  const bool full = phase_ == Phase::BlockStart || p_.cache == CacheMode::None;
  return full && !(phase_ == Phase::BlockStart && dream_cached()) ? 0 : start_;
}

bool FullAttentionSequence::loop_runs_once_more() const {
  // dParallel's LLaDA cached loops are Fast-dLLM's first release (3.3), and
  // Fast-dLLM v1's Dream cache loop tests for masks after its forward (4.2).
  if (sampler_ == Sampler::AdaBlock) return false;
  if (dream_) return p_.cache != CacheMode::None;
  return sampler_ == Sampler::EntropyThreshold && p_.cache != CacheMode::None;
}

void FullAttentionSequence::validate_combination() {
  const std::string name = "sampler='" + p_.sampler + "'";
  const std::string cache = std::string(" with cache='") + cache_name(p_.cache) + "'";
  if (dream_) {
    FDL_CHECK(sampler_ != Sampler::LowConfidence && sampler_ != Sampler::Fixed && sampler_ != Sampler::Factor, name,
              " is a LLaDA sampler; Dream models take maskgit_plus, topk_margin, entropy, origin, threshold, "
              "entropy_threshold or adablock");
    FDL_CHECK(!(sampler_ == Sampler::EntropyThreshold && p_.cache != CacheMode::None), name, cache,
              ": dParallel's Dream sampler has no cache (use cache='none')");
    FDL_CHECK(!(sampler_ == Sampler::AdaBlock && p_.cache == CacheMode::Prefix), name, cache,
              ": AdaBlock-dLLM's Dream code has no prefix-only cache (use cache='none' or 'dual')");
  } else {
    FDL_CHECK(sampler_ != Sampler::MaskgitPlus && sampler_ != Sampler::TopkMargin && sampler_ != Sampler::Entropy &&
                  sampler_ != Sampler::Origin,
              name, " is a Dream algorithm; LLaDA models take low_confidence, fixed, threshold, factor, "
              "entropy_threshold or adablock");
    FDL_CHECK(!(sampler_ == Sampler::LowConfidence && p_.cache != CacheMode::None), name, cache,
              ": LLaDA's own sampler has no cache; sampler='fixed' is the same rule with Fast-dLLM v1's caches");
  }
  if (sampler_ == Sampler::Factor) FDL_CHECK(p_.factor > 0.f && std::isfinite(p_.factor), "factor must be > 0, got ", p_.factor);
  if (blocked() && sampler_ != Sampler::AdaBlock && gen_ > 0) {
    const int64_t B = p_.block_size;
    FDL_CHECK(gen_ % B == 0, "max_new_tokens (", gen_, ") must be a multiple of block_size (", B, ") for ", name,
              ", as the official code asserts");
    const int64_t blocks = gen_ / B;
    FDL_CHECK(steps_ % blocks == 0, "steps (", steps_, ") must be a multiple of the number of blocks (", blocks,
              " = max_new_tokens / block_size), as the official code asserts");
  }
}

void FullAttentionSequence::attach(KVCache* kv, const PrefixCache::Match&, int64_t, PageReservation reservation) {
  // Bidirectional attention: a prompt's K/V depend on what follows it, so no
  // page is shared with another sequence.
  reservation_ = std::move(reservation);
  pages_ = std::make_unique<PageTable>(&kv->pool());
  while (pages_->capacity_tokens() < int64_t(x_.size())) pages_->push(reservation_.take());
  if (phase_ == Phase::BlockStart && gen_ > 0) start_block();
}

void FullAttentionSequence::finish() {
  if (done_) return;
  done_ = true;
  if (pages_) pages_->clear();
  reservation_.reset();
}

int64_t FullAttentionSequence::block_masks() const {
  int64_t n = 0;
  for (int64_t p = start_; p < end_; ++p) n += x_[size_t(p)] == p_.mask_id;
  return n;
}

void FullAttentionSequence::start_block() {
  start_ = p0_ + generated_;
  step_ = 0;
  block_forwards_ = 0;
  phase_ = Phase::BlockStart;
  if (sampler_ != Sampler::AdaBlock) {  // AdaBlock sizes the block from the block-start forward
    end_ = start_ + p_.block_size;
    generated_ += p_.block_size;
    block_lengths_.push_back(p_.block_size);
  }
}

void FullAttentionSequence::end_block() {
  if (generated_ >= gen_) finish();
  else start_block();
}

void FullAttentionSequence::begin_block_loop() {
  step_ = 0;  // the block-start forward was step 0
  phase_ = Phase::InBlock;
  if (sampler_ == Sampler::LowConfidence) {  // exactly S forwards per block (3.1)
    if (steps_per_block_ <= 1) end_block();
    return;
  }
  if (!loop_runs_once_more() && block_masks() == 0) end_block();
}

std::vector<int32_t> FullAttentionSequence::decoded_prefix() const {
  // The final run after the prompt, up to and including the first stop token
  // (the text ends there; the ids of output() go on to G).
  int64_t i = p0_;
  while (i < int64_t(x_.size()) && x_[size_t(i)] != p_.mask_id) {
    if (x_[size_t(i++)] == p_.stop_id) break;
  }
  return std::vector<int32_t>(x_.begin() + p0_, x_.begin() + i);
}

const char* FullAttentionSequence::finish_reason() const {
  if (!done_) return "";
  return p_.stop_id >= 0 && std::find(x_.begin() + p0_, x_.end(), p_.stop_id) != x_.end() ? "stop" : "length";
}

std::vector<int32_t> FullAttentionSequence::output() const { return std::vector<int32_t>(x_.begin() + p0_, x_.end()); }

std::vector<int32_t> FullAttentionSequence::commit_steps(int64_t n) const {
  n = std::min<int64_t>(n, int64_t(commit_step_.size()));
  return std::vector<int32_t>(commit_step_.begin(), commit_step_.begin() + n);
}

bool FullAttentionSequence::next(int64_t budget, ForwardRequest* req) {
  if (done_) return false;
  const int64_t L = int64_t(x_.size());
  if (gen_ == 0 || (phase_ == Phase::Whole && step_ >= steps_)) {  // nothing to run (the official loops run none)
    finish();
    return false;
  }
  StepKind kind = StepKind::Full;
  int64_t in0 = 0, in1 = L;
  if (phase_ == Phase::InBlock && p_.cache == CacheMode::Prefix) kind = StepKind::PrefixCached, in0 = start_;
  if (phase_ == Phase::InBlock && p_.cache == CacheMode::Dual) kind = StepKind::DualCached, in0 = start_, in1 = end_;
  if (in1 - in0 > budget) return false;

  pending_pos_.clear();
  if (phase_ == Phase::Whole) {
    for (int64_t p = 0; p < L; ++p)
      if (x_[size_t(p)] == p_.mask_id) pending_pos_.push_back(int32_t(p));
  } else if (phase_ == Phase::BlockStart && sampler_ == Sampler::AdaBlock) {
    // Masks before the block, then the delimiter window and the largest block the fallback can give.
    const int64_t lo = candidates_from();
    for (int64_t p = lo; p < start_; ++p)
      if (x_[size_t(p)] == p_.mask_id) pending_pos_.push_back(int32_t(p));
    const int64_t rem = gen_ - generated_;
    const int64_t span = std::max(adablock_window(), std::min<int64_t>(p_.block_size, rem));
    for (int64_t p = start_; p < start_ + span; ++p) pending_pos_.push_back(int32_t(p));
  } else if (phase_ == Phase::BlockStart && dream_cached()) {
    pending_pos_.push_back(int32_t(start_));  // only the block's first position is decided (4.2)
  } else {
    for (int64_t p = candidates_from(); p < end_; ++p)
      if (x_[size_t(p)] == p_.mask_id) pending_pos_.push_back(int32_t(p));
  }

  req->kind = kind;
  req->tokens.assign(x_.begin() + in0, x_.begin() + in1);
  req->positions.resize(size_t(in1 - in0));
  for (int64_t i = in0; i < in1; ++i) req->positions[size_t(i - in0)] = int32_t(i);
  req->kv_limit.assign(size_t(in1 - in0), int32_t(L));  // bidirectional: every query sees the whole row
  req->write_offset = int32_t(in0);
  req->pages = pages_->pages();
  req->rows.clear();
  for (int32_t p : pending_pos_) {
    // Dream's shifted logits: position p is predicted by the output at p - 1,
    // except the input's first position, which reads its own (quirk, 2.2).
    const int64_t row = !dream_ ? p - in0 : p == in0 ? 0 : p - in0 - 1;
    req->rows.push_back(int32_t(row));
  }
  req->sample = false;
  pending_kind_ = kind;
  pending_start_ = in0;
  return true;
}

void FullAttentionSequence::commit(int32_t pos, int32_t token) {
  x_[size_t(pos)] = token;  // the arg-max, even the mask token (which leaves the position masked, as upstream)
  if (pos >= p0_) commit_step_[size_t(pos - p0_)] = token == p_.mask_id ? -1 : int32_t(forwards_);
}

void FullAttentionSequence::transfer(const std::vector<Stat>& cand, const std::vector<uint8_t>& unmask) {
  for (size_t k = 0; k < cand.size(); ++k)
    if (unmask[k]) commit(cand[k].pos, cand[k].token);
}

int64_t FullAttentionSequence::adablock_window() const {
  return std::min(gen_ / 4, gen_ - generated_);  // int(0.25 * G): G / 4 exactly
}

int64_t FullAttentionSequence::adablock_length(const std::vector<Stat>& window) const {
  const int64_t rem = gen_ - generated_, w = adablock_window();
  const int64_t fallback = std::min<int64_t>(p_.block_size, rem);
  int64_t best_pos = -1;
  float best_c = 0.f;  // exp(logit - logsumexp) in fp32, compared as a Python float (.item())
  for (const Stat& s : window) {
    if (s.pos < start_ || s.pos >= start_ + w) continue;
    if (std::find(delimiters_.begin(), delimiters_.end(), s.token) == delimiters_.end()) continue;
    if (best_pos < 0 || s.p1 > best_c) best_pos = s.pos, best_c = s.p1;
  }
  if (best_pos >= 0 && double(best_c) >= p_.delimiter_threshold) return best_pos - start_ + 1;
  return fallback;
}

void FullAttentionSequence::rule_step(std::vector<Stat> cand, int64_t step) {
  // Dream's threshold and entropy rules rank at most as many candidates as the
  // block has masks (4.3, 4.4: current_transfer_tokens), even when prompt masks
  // are candidates too.
  if (dream_ && (sampler_ == Sampler::Threshold || sampler_ == Sampler::AdaBlock ||
                 sampler_ == Sampler::EntropyThreshold)) {
    const int64_t k = block_masks();
    if (int64_t(cand.size()) > k) {
      const bool by_entropy = sampler_ == Sampler::EntropyThreshold;
      std::stable_sort(cand.begin(), cand.end(), [&](const Stat& a, const Stat& b) {
        return by_entropy ? a.entropy < b.entropy : a.p1 > b.p1;
      });
      cand.resize(size_t(k));
    }
  }
  const int n = int(cand.size());
  std::vector<double> score(static_cast<size_t>(n));
  std::vector<uint8_t> unmask(static_cast<size_t>(n), 0);
  auto fill = [&](auto f) {
    for (int k = 0; k < n; ++k) score[size_t(k)] = f(cand[size_t(k)]);
  };
  // Confidences as the official code computes them: float64 softmax for
  // Fast-dLLM v1 / AdaBlock on LLaDA (1 - tail mass keeps what fp32 rounds to 1),
  // the logits' fp32 softmax for LLaDA's own sampler and for Dream.
  const auto conf64 = [](const Stat& s) { return 1.0 - double(s.tail); };
  const auto conf32 = [](const Stat& s) { return double(s.p1); };
  const double t32 = double(float(p_.threshold));  // a Python float against an fp32 tensor
  switch (sampler_) {
    case Sampler::LowConfidence:
      fill(conf32);
      rules::top_k(score.data(), n, rules::llada_step_count(p_.block_size, steps_per_block_, step), unmask.data());
      break;
    case Sampler::Fixed:
      FDL_CHECK_RT(step < steps_per_block_, "the fixed schedule (", steps_per_block_,
                   " steps per block) is used up and block [", start_ - p0_, ", ", end_ - p0_,
                   ") still has masks (masks in the prompt are candidates too); the official code fails here "
                   "(IndexError)");
      fill(conf64);
      rules::top_k(score.data(), n, rules::llada_step_count(p_.block_size, steps_per_block_, step), unmask.data());
      break;
    case Sampler::Threshold:
    case Sampler::AdaBlock:
      if (dream_) {
        fill(conf32);
        rules::threshold(score.data(), n, t32, true, unmask.data());
      } else {
        fill(conf64);
        rules::threshold(score.data(), n, p_.threshold, true, unmask.data());
      }
      break;
    case Sampler::Factor:
      fill(conf64);
      rules::factor(score.data(), n, p_.factor, unmask.data());
      break;
    case Sampler::EntropyThreshold:
      fill([](const Stat& s) { return double(s.entropy); });
      // dParallel: H <= t on LLaDA (3.3, float64), H < t on Dream (4.3, fp32).
      rules::entropy_threshold(score.data(), n, dream_ ? double(float(p_.entropy_threshold)) : p_.entropy_threshold,
                               !dream_, unmask.data());
      break;
    default: {  // Fast-dLLM v1 Dream cache with Dream's own algorithms: negative entropy, scheduled (4.2)
      fill([](const Stat& s) { return -double(s.entropy); });
      const bool last = step == steps_per_block_ - 1;
      const int64_t k = rules::dream_step_count(n, rules::dream_timestep(steps_per_block_, step + 1),
                                                rules::dream_timestep(steps_per_block_, step), last);
      rules::top_k(score.data(), n, k, unmask.data());
      break;
    }
  }
  transfer(cand, unmask);
}

void FullAttentionSequence::whole_step(const std::vector<Stat>& cand) {
  const int n = int(cand.size());
  std::vector<uint8_t> unmask(static_cast<size_t>(n), 0);
  std::vector<double> score(static_cast<size_t>(n));
  if (sampler_ == Sampler::Threshold) {  // confidence_threshold with its quota / carry (4.1)
    for (int k = 0; k < n; ++k) score[size_t(k)] = cand[size_t(k)].p1;
    const double t32 = double(float(p_.threshold));
    std::vector<int> order(static_cast<size_t>(n));
    for (int k = 0; k < n; ++k) order[size_t(k)] = k;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[size_t(a)] > score[size_t(b)]; });
    const int64_t k = std::min<int64_t>(quota_ + carry_, n);
    carry_ = 0;
    for (int64_t r = 0; r < k; ++r) {
      const int c = order[size_t(r)];
      if (r == 0 || score[size_t(c)] >= t32) {
        unmask[size_t(c)] = 1;
      } else {
        ++carry_;
        if (step_ == steps_ - 1) {  // a deferral on the last step adds one step (quirk)
          quota_ = 0;
          ++steps_;
        }
      }
    }
    transfer(cand, unmask);
    return;
  }
  const float t = rules::dream_timestep(steps_, step_), s = rules::dream_timestep(steps_, step_ + 1);
  const bool last = step_ == steps_ - 1;
  if (sampler_ == Sampler::Origin) {
    // Each masked position independently with probability 1 - s/t (all on the
    // last step): the engine's own seeded draws (torch's cannot be reproduced).
    const float keep = s / t, p_transfer = 1.0f - keep;
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (int k = 0; k < n; ++k) unmask[size_t(k)] = last || u(rng_) < p_transfer;
    transfer(cand, unmask);
    return;
  }
  for (int k = 0; k < n; ++k) {
    const Stat& c = cand[size_t(k)];
    // fp32 as Dream computes them: top-1 minus top-2 is an fp32 subtraction
    score[size_t(k)] = sampler_ == Sampler::TopkMargin ? double(c.p1 - c.p2)
                       : sampler_ == Sampler::Entropy  ? -double(c.entropy)
                                                       : double(c.p1);
  }
  rules::top_k(score.data(), n, rules::dream_step_count(n, s, t, last), unmask.data());
  transfer(cand, unmask);
}

void FullAttentionSequence::check_progress() {
  // The official loops repeat until the block is full; a model that keeps
  // predicting the mask token would repeat the same forward forever there.
  const int64_t limit = (end_ - start_) + steps_per_block_ + 2;
  FDL_CHECK_RT(block_forwards_ <= limit, "decoding made no progress: block [", start_ - p0_, ", ", end_ - p0_,
               ") still has masks after ", block_forwards_, " forwards (the model keeps predicting the mask token ",
               p_.mask_id, "; the official loop would not end)");
}

void FullAttentionSequence::on_result(const RowResults& r) {
  ++forwards_;
  ++block_forwards_;
  const int n = int(pending_pos_.size());
  stats_.resize(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) {
    Stat& s = stats_[size_t(k)];
    s.pos = pending_pos_[size_t(k)];
    s.token = r.top2_index[2 * k];
    s.p1 = r.top2_prob[4 * k];
    s.p2 = r.top2_prob[4 * k + 1];
    s.entropy = r.top2_prob[4 * k + 2];
    s.tail = r.top2_prob[4 * k + 3];
    FDL_CHECK_RT(std::isfinite(s.p1) && std::isfinite(s.entropy) && s.token >= 0 && s.token < vocab_, "the ",
                 step_kind_name(pending_kind_), " forward (the sequence's forward ", forwards_,
                 ") produced non-finite logits: the model's weights or activations overflowed");
  }
  // The candidates of a block rule: the block's positions still masked.
  const int64_t lo = candidates_from();
  auto block_candidates = [&] {
    std::vector<Stat> c;
    for (const Stat& s : stats_)
      if (s.pos >= lo && s.pos < end_ && x_[size_t(s.pos)] == p_.mask_id) c.push_back(s);
    return c;
  };
  switch (phase_) {
    case Phase::Whole:
      whole_step(stats_);
      if (++step_ >= steps_) finish();
      // Dream's threshold loop grows while it defers; it ends unless the model keeps predicting the mask token.
      FDL_CHECK_RT(done_ || sampler_ != Sampler::Threshold || forwards_ <= max_whole_forwards_,
                   "decoding made no progress: ", forwards_, " forwards and masks remain (the model keeps predicting "
                   "the mask token ", p_.mask_id, "; the official loop would not end)");
      break;
    case Phase::BlockStart: {
      if (sampler_ == Sampler::AdaBlock) {
        const int64_t len = adablock_length(stats_);
        end_ = start_ + len;
        generated_ += len;
        block_lengths_.push_back(len);
      }
      if (dream_cached()) {
        commit(int32_t(start_), stats_[0].token);  // whatever the rule and confidences (4.2, 4.4)
      } else {
        rule_step(block_candidates(), 0);
      }
      begin_block_loop();
      break;
    }
    case Phase::InBlock: {
      ++step_;
      const bool scheduled = dream_cached() && sampler_ != Sampler::Threshold && sampler_ != Sampler::AdaBlock;
      if (scheduled && step_ == steps_per_block_) {  // the forward ran and is counted, then the block stops (4.2)
        end_block();
        break;
      }
      rule_step(block_candidates(), step_);
      if (sampler_ == Sampler::LowConfidence) {
        if (step_ + 1 >= steps_per_block_) end_block();
        break;
      }
      if (block_masks() == 0) end_block();
      else check_progress();
      break;
    }
  }
}

}  // namespace fastdllm
