// The decode loop of fast_dllm_v2.md section 4, as a state machine with one
// model forward per step(). The control flow of the spec's nested loops is
// recovered from the tokens alone: the current sub-block is the first one that
// still holds a mask, and the checks run in the spec's order ((A) stop rule,
// then "block finished -> commit", then one denoising forward).
// The in-block decisions (what the next forward is, which positions a forward
// unmasks) are ops/denoise_rule.h's, shared with the device's decide kernels.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "fastdllm/error.h"
#include "fastdllm/generation.h"
#include "fastdllm/ops.h"
#include "ops/denoise_rule.h"
#include "ops/launch_plans.h"
#include "runtime/device_decisions.h"
#include "runtime/sampling.h"

namespace fastdllm {

namespace {
// Auto: on for greedy decoding on a GPU; FASTDLLM_DEVICE_DECISIONS=0 / 1 turns
// it off / on for any device (A/B runs; CI runs the device path on the CPU).
bool device_decisions_wanted(const GenerationParams& p, const Model& model) {
  if (p.device_decisions >= 0) return p.device_decisions == 1;
  if (p.temperature != 0.f) return false;
  const char* env = std::getenv("FASTDLLM_DEVICE_DECISIONS");
  if (env && (env[0] == '0' || env[0] == '1')) return env[0] == '1';
  return model.device() != Device::CPU;
}
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
  FDL_CHECK(device_decisions >= -1 && device_decisions <= 1, "device_decisions must be -1 (auto), 0 or 1, got ",
            device_decisions);
  FDL_CHECK(device_decisions != 1 || temperature == 0.f,
            "device_decisions=1 needs greedy decoding (temperature 0): sampling draws on the host");
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
  if (device_decisions_wanted(p_, model)) device_ = std::make_unique<DeviceDecisions>(model, p_.block_size, p_.use_block_cache);
}

Generation::~Generation() {
  device_.reset();  // forwards in flight still write the block's pages
  release_block_pages();
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
  const int64_t start = int64_t(x_.size()) - p_.block_size;
  const denoise::Next nx = denoise::next_in_block(x_.data() + start, p_.block_size, p_.sub_block_size,
                                                  int(pb_ - start), p_.mask_id, p_.stop_id, p_.use_block_cache,
                                                  block_cache_valid_);
  if (nx.kind == denoise::kStop) return Action::Finish;
  if (nx.kind == denoise::kCommit) return Action::Commit;
  next_sub_block_ = nx.sub_block;
  next_sub_only_ = nx.kind == denoise::kSub;
  return Action::Denoise;
}

bool Generation::step() {
  for (;;) {
    if (device_ && device_->busy()) {
      if (take_device_result()) return true;
      continue;  // a speculative launch that the device skipped
    }
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
      case Action::Denoise:
        if (device_) {
          denoise_on_device(next_sub_block_, next_sub_only_);
          continue;  // its result is taken above
        }
        denoise(next_sub_block_, next_sub_only_);
        return true;
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
    o.exclude = p_.mask_id;  // a denoising step never writes the mask token (denoise::greedy_choice)
    model_.forward_candidates(a, o, &candidates_);
    sample_rows(candidates_, int64_t(n), model_.config().vocab_size - 1, o, rng_, argmax_.data(), conf_.data());
  } else {
    // Greedy: the lm_head fused with the reduction; slot 1 is the best token
    // other than slot 0, which denoise::greedy_choice falls back to.
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

void Generation::denoise(int sb, bool sub_only) {
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
  std::vector<int32_t>& rows = rows_;
  rows.clear();
  if (!sub_only) {
    // Whole block at positions c..c+B-1 under the 32-granular block-causal mask.
    tokens_.assign(x_.begin() + start, x_.end());
    limit_.resize(size_t(B));
    for (int64_t q = 0; q < B; ++q)
      limit_[size_t(q)] = denoise::full_block_limit(int32_t(c), int32_t(B), int32_t(q));
    for (int32_t j : masked) rows.push_back(denoise::output_row(j, 0));
    last_step_ = StepKind::Denoise;
    run_forward(tokens_, c, table_, c, c + B, &limit_, rows, sampling);
    if (p_.use_block_cache) block_cache_valid_ = true;
  } else {
    // Sub-block only: its fresh K/V overwrite rows [s, s+S) of the block cache;
    // the queries see the prefix and all B block entries, unmasked (spec 4.1).
    tokens_.assign(x_.begin() + start + s, x_.begin() + start + s + S);
    for (int32_t j : masked) rows.push_back(denoise::output_row(j, int(s)));
    last_step_ = StepKind::DenoiseSubBlock;
    run_forward(tokens_, c + s, table_, c + s, c + B, nullptr, rows, sampling);
  }

  // Confidence-threshold unmasking over the masked positions of the sub-block.
  // (Sampling never draws the mask token: it is excluded from the candidates.)
  if (!sampling)
    for (size_t r = 0; r < rows.size(); ++r)
      denoise::greedy_choice(&top2_index_[2 * r], &top2_prob_[2 * r], p_.mask_id, &argmax_[r], &conf_[r]);
  const int best = denoise::first_best(int(masked.size()), conf_.data());
  for (size_t r = 0; r < masked.size(); ++r)
    if (denoise::unmasks(conf_[r], p_.threshold, int(r) == best)) x_[size_t(start + masked[r])] = argmax_[r];
}

// The same forward with its decisions on the device: the block's state goes
// up, the forward is queued, and the device may go on with the next ones
// (runtime/device_decisions.h) while step() takes the results in order.
void Generation::denoise_on_device(int sb, bool sub_only) {
  const int64_t B = p_.block_size, S = p_.sub_block_size;
  const int64_t start = int64_t(x_.size()) - B;
  ensure_block_pages();
  const int64_t pages = pool_.capacity();
  device_state_.assign(size_t(denoise::state_words(int(B), int(pages))), 0);
  auto& h = *reinterpret_cast<denoise::DenoiseHeader*>(device_state_.data());
  h.go = sub_only ? denoise::kSub : denoise::kFull;
  h.forwards = 0;
  h.sub_block = sb;
  h.cache_valid = block_cache_valid_;
  h.c = int32_t(committed_.capacity_tokens());
  h.pb_off = int32_t(pb_ - start);
  h.mask_id = p_.mask_id;
  h.stop_id = p_.stop_id;
  h.use_block_cache = p_.use_block_cache;
  h.threshold = p_.threshold;
  h.block = int32_t(B);
  h.sub = int32_t(S);
  h.pages = int32_t(pages);
  // A GPU buckets output rows (more graph replays at the same cost); the CPU computes S.
  const bool gpu = model_.device() != Device::CPU;
  h.rows_full = int32_t(gpu ? plans::logit_rows_bucket(S, B) : S);
  h.rows_sub = int32_t(S);
  std::copy(x_.begin() + start, x_.end(), denoise::block_tokens(device_state_.data()));
  int32_t* table = device_state_.data() + denoise::kHeaderWords + B;
  for (int64_t i = 0; i < pages; ++i) table[i] = i < int64_t(table_.size()) ? table_[size_t(i)] : table_[0];
  device_->start(device_state_, &pool_);
}

bool Generation::take_device_result() {
  const DeviceDecisions::Result r = device_->next();
  if (!r.ran) return false;  // a speculative launch the device skipped
  const auto& h = *reinterpret_cast<const denoise::DenoiseHeader*>(r.state);
  const int64_t B = p_.block_size;
  std::copy(denoise::block_tokens(r.state), denoise::block_tokens(r.state) + B, x_.end() - B);
  block_cache_valid_ = h.cache_valid != 0;
  last_step_ = r.kind == denoise::kFull ? StepKind::Denoise : StepKind::DenoiseSubBlock;
  ++forwards_;
  return true;
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
