#include "runtime/scheduler.h"

#include <algorithm>
#include <exception>

#include "fastdllm/error.h"

namespace fastdllm {

Scheduler::Scheduler(std::shared_ptr<Model> model, const SchedulerConfig& config)
    : model_(std::move(model)),
      config_(config),
      kv_(model_->kv_geometry(config.page_size, config.kv_dtype), config.max_pages, model_->device(),
          config.prefix_cache) {
  FDL_CHECK(model_->ready(), "scheduler: the model's weights are not all loaded");
  FDL_CHECK(config.max_batch_size >= 1, "max_batch_size must be >= 1, got ", config.max_batch_size);
  FDL_CHECK(config.max_batch_tokens >= 1, "max_batch_tokens must be >= 1, got ", config.max_batch_tokens);
}

Scheduler::~Scheduler() {
  // Sequences hold pages and reservations of kv_: they go first.
  running_.clear();
  waiting_.clear();
}

std::unique_ptr<Sequence> Scheduler::make_sequence(int64_t id, std::vector<int32_t> prompt,
                                                   const GenerationParams& params) const {
  std::unique_ptr<Sequence> seq =
      fastdllm::make_sequence(id, std::move(prompt), params, model_->config(), config_.page_size);
  FDL_CHECK(seq->max_forward_tokens() <= config_.max_batch_tokens,
            params.family == ModelFamily::FastDllmV2 ? "block_size (" : "prompt + max_new_tokens (",
            seq->max_forward_tokens(), ") exceeds the engine's max_batch_tokens (", config_.max_batch_tokens,
            "): its forward could never be scheduled",
            params.family == ModelFamily::FastDllmV2 ? "" : " (LLaDA / Dream forwards run over the whole row)");
  const int64_t need = seq->max_pages(), have = kv_.pool().capacity();
  if (need > have) {
    const KVGeometry& g = kv_.pool().geometry();
    throw BudgetExceeded(detail::concat(
        "KV cache budget exceeded: this request needs up to ", need, " pages (prompt ", seq->prompt_len(),
        " tokens + max_new_tokens ", params.max_new_tokens, ", in pages of ", g.page_size, " tokens) but the budget (",
        "max_memory, ", kv_.pool().storage_bytes(), " bytes) holds all ", have, " pages (", g.page_bytes(),
        " bytes each); raise max_memory or lower max_new_tokens"));
  }
  return seq;
}

void Scheduler::score(const std::vector<int32_t>& tokens, int block_size, float* logits) {
  const int64_t L = int64_t(tokens.size()), V = model_->config().vocab_size, ps = config_.page_size;
  FDL_CHECK(L >= 1, "logits: token_ids is empty");
  FDL_CHECK(block_size >= 1, "logits: block_size must be >= 1, got ", block_size);
  for (int64_t i = 0; i < L; ++i)
    FDL_CHECK(tokens[size_t(i)] >= 0 && tokens[size_t(i)] < V, "logits: token id ", tokens[size_t(i)], " at index ",
              i, " is outside the vocabulary [0, ", V, ")");
  const int64_t pages = (L + ps - 1) / ps;
  PageReservation res;
  if (!kv_.try_reserve(pages, 0, &res))
    throw BudgetExceeded(detail::concat("logits: ", L, " tokens need ", pages, " KV pages but only ", kv_.available(),
                                        " are free now (of ", kv_.pool().capacity(),
                                        "); wait for running requests or raise max_memory"));
  PageTable table(&kv_.pool());
  for (int64_t i = 0; i < pages; ++i) table.push(res.take());
  const int64_t bs = block_size;
  const int64_t chunk = std::max<int64_t>(bs, config_.max_batch_tokens / bs * bs);
  ForwardBatchBuilder builder;
  std::vector<int32_t> toks, pos, limit, rows;
  for (int64_t c0 = 0; c0 < L; c0 += chunk) {
    const int64_t len = std::min(chunk, L - c0);
    toks.assign(tokens.begin() + c0, tokens.begin() + c0 + len);
    pos.resize(size_t(len));
    limit.resize(size_t(len));
    rows.resize(size_t(len));
    for (int64_t i = 0; i < len; ++i) {
      const int64_t q = c0 + i;
      pos[size_t(i)] = int32_t(q);
      limit[size_t(i)] = int32_t(std::min((q / bs + 1) * bs, c0 + len));  // block-causal, within the forward
      rows[size_t(i)] = int32_t(i);
    }
    builder.clear();
    builder.add(toks, pos, limit, table.pages(), int32_t(c0));
    ForwardBatch b = builder.batch();
    b.logit_rows = rows.data();
    b.num_logits = len;
    ForwardOutputs out;
    out.logits = logits + c0 * V;
    model_->forward(b, kv_.pool().store(), out);
  }
}

void Scheduler::enqueue(std::unique_ptr<Sequence> seq) { waiting_.push_back(std::move(seq)); }

bool Scheduler::cancel(int64_t id) {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
    if ((*it)->id() == id) {
      waiting_.erase(it);
      ++stats_.cancelled;
      return true;
    }
  for (auto it = running_.begin(); it != running_.end(); ++it)
    if ((*it)->id() == id) {
      (*it)->cancel();
      running_.erase(it);
      ++stats_.cancelled;
      return true;
    }
  return false;
}

void Scheduler::admit() {
  const int64_t ps = config_.page_size;
  while (!waiting_.empty() && int64_t(running_.size()) < config_.max_batch_size) {
    Sequence& seq = *waiting_.front();
    const int B = seq.params().block_size;
    const PrefixCache::Match match = seq.prefill_blocks() > 0
                                         ? kv_.prefix().lookup(seq.tokens().data(), seq.prefill_blocks(), B)
                                         : PrefixCache::Match();
    const int64_t blocks = seq.usable_prefix_blocks(match);
    const int64_t shared = blocks * B / ps;
    int64_t pinned = 0;
    for (int64_t i = 0; i < shared; ++i) pinned += kv_.pool().refcount(match.pages[size_t(i)]) == 1;
    PageReservation reservation;
    if (!kv_.try_reserve(seq.max_pages() - shared, pinned, &reservation)) break;  // first come, first served
    seq.attach(&kv_, match, blocks, std::move(reservation));
    stats_.prefix_cache_hit_tokens += seq.prefix_hit_tokens();
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
}

bool Scheduler::step(Report* report) {
  report->progressed.clear();
  report->finished.clear();
  report->failed.clear();
  report->ran_forward = false;
  admit();
  if (running_.empty()) return !waiting_.empty();
  collect();
  if (!batch_seqs_.empty()) run_batch(report);
  // Hand over what ended (finished without a forward, or after its last one).
  for (size_t i = 0; i < running_.size();) {
    if (running_[i]->done()) {
      stats_.tokens_generated += int64_t(running_[i]->output().size());
      ++stats_.finished;
      report->finished.push_back(std::move(running_[i]));
      running_.erase(running_.begin() + int64_t(i));
    } else {
      ++i;
    }
  }
  return !idle();
}

// Denoising and commit forwards first, in admission order (they keep running
// sequences moving); prefills take what is left of the token budget, in whole
// blocks.
void Scheduler::collect() {
  batch_seqs_.clear();
  int64_t budget = config_.max_batch_tokens;
  if (requests_.size() < running_.size()) requests_.resize(running_.size());
  for (int pass = 0; pass < 2; ++pass)
    for (auto& s : running_) {
      if (s->done() || s->wants_prefill() != (pass == 1)) continue;
      ForwardRequest& req = requests_[batch_seqs_.size()];
      if (!s->next(budget, &req)) continue;  // done, or does not fit this step
      budget -= int64_t(req.tokens.size());
      batch_seqs_.push_back(s.get());
    }
}

void Scheduler::run_batch(Report* report) {
  const int n = int(batch_seqs_.size());
  batch_.clear();
  greedy_rows_.clear(), sample_rows_.clear(), sample_options_.clear();
  greedy_at_.assign(size_t(n), 0);
  sample_at_.assign(size_t(n), 0);
  for (int i = 0; i < n; ++i) {
    const ForwardRequest& r = requests_[size_t(i)];
    const int32_t base = batch_.add(r.tokens, r.positions, r.kv_limit, r.pages, r.write_offset);
    greedy_at_[size_t(i)] = int32_t(greedy_rows_.size());
    sample_at_[size_t(i)] = int32_t(sample_rows_.size());
    for (int32_t row : r.rows) {
      if (r.sample) {
        sample_rows_.push_back(base + row);
        sample_options_.push_back(r.sampling);
      } else {
        greedy_rows_.push_back(base + row);
      }
    }
  }
  ForwardBatch b = batch_.batch();
  b.greedy_rows = greedy_rows_.data();
  b.num_greedy = int64_t(greedy_rows_.size());
  b.sample_rows = sample_rows_.data();
  b.sample_options = sample_options_.data();
  b.num_sample = int64_t(sample_rows_.size());
  top2_index_.resize(size_t(2 * b.num_greedy));
  top2_prob_.resize(size_t(4 * b.num_greedy));
  ForwardOutputs out;
  out.top2_index = top2_index_.data();
  out.top2_prob = top2_prob_.data();
  out.candidates = &candidates_;
  try {
    model_->forward(b, kv_.pool().store(), out);
  } catch (const std::exception& e) {
    // The forward itself failed: every sequence in it fails, none is left half-done.
    for (Sequence* s : batch_seqs_) fail(s, e.what(), report);
    return;
  }
  report->ran_forward = true;
  ++stats_.model_forwards;
  stats_.sequence_forwards += n;
  stats_.batch_tokens += b.num_tokens;
  ++stats_.batch_size_histogram[n];
  for (int i = 0; i < n; ++i) {
    Sequence* s = batch_seqs_[size_t(i)];
    RowResults rr;
    rr.top2_index = top2_index_.data() + 2 * greedy_at_[size_t(i)];
    rr.top2_prob = top2_prob_.data() + 4 * greedy_at_[size_t(i)];
    if (requests_[size_t(i)].sample) {
      rr.candidates = &candidates_;
      rr.candidate_row0 = sample_at_[size_t(i)];
    }
    try {
      s->on_result(rr);
      s->settle();
      if (!s->done()) report->progressed.push_back(s);
    } catch (const std::exception& e) {  // e.g. a sampled row that is not finite: this sequence alone fails
      fail(s, e.what(), report);
    }
  }
}

void Scheduler::fail(Sequence* seq, const std::string& why, Report* report) {
  for (size_t i = 0; i < running_.size(); ++i)
    if (running_[i].get() == seq) {
      running_[i]->cancel();
      report->failed.emplace_back(std::move(running_[i]), why);
      running_.erase(running_.begin() + int64_t(i));
      ++stats_.failed;
      return;
    }
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s = stats_;
  s.pages_total = kv_.pool().capacity();
  s.pages_cached = kv_.prefix().evictable_pages();  // a scan of the cache: once
  s.pages_in_use = kv_.pool().pages_in_use() - s.pages_cached;  // as KVCache::pages_in_use
  s.pages_reserved = kv_.reserved();
  s.waiting = int64_t(waiting_.size());
  s.running = int64_t(running_.size());
  return s;
}

}  // namespace fastdllm
