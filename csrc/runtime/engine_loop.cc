#include "runtime/engine_loop.h"

#include <omp.h>

#include <chrono>
#include <future>

#include "fastdllm/error.h"

namespace fastdllm {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class Pred>
bool wait_for(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, double timeout_s, Pred pred) {
  if (timeout_s < 0) {
    cv.wait(lock, pred);
    return true;
  }
  return cv.wait_for(lock, std::chrono::duration<double>(timeout_s), pred);
}
}  // namespace

uint64_t Request::wait(uint64_t seen, double timeout_s) const {
  std::unique_lock<std::mutex> lock(mu_);
  wait_for(cv_, lock, timeout_s, [&] { return state_.version > seen; });
  return state_.version;
}

RequestState Request::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

void Request::cancel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_.done) return;
  }
  loop_->cancel(id_);
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return state_.done; });
}

void Request::publish(const Sequence& s, bool final) {
  std::vector<int32_t> decoded = s.decoded_prefix();
  std::lock_guard<std::mutex> lock(mu_);
  const bool changed = decoded != state_.decoded || final || s.num_forwards() != state_.num_forwards;
  if (!changed) return;
  if (state_.first_forward_s == 0 && s.num_forwards() > 0) state_.first_forward_s = now_s();
  state_.decoded = std::move(decoded);
  state_.commit_steps = s.commit_steps(int64_t(state_.decoded.size()));
  state_.num_forwards = s.num_forwards();
  state_.prefix_hit_tokens = s.prefix_hit_tokens();
  if (final) {
    state_.done = true;
    state_.finish_reason = s.finish_reason();
    state_.output = s.output();
    state_.block_lengths = s.block_lengths();
    state_.commit_steps = s.commit_steps(int64_t(state_.output.size()));
    state_.finished_s = now_s();
  }
  ++state_.version;
  cv_.notify_all();
}

void Request::end(const std::string& reason, const std::string& error) {
  std::lock_guard<std::mutex> lock(mu_);
  if (state_.done) return;
  state_.done = true;
  state_.finish_reason = reason;
  state_.error = error;
  state_.finished_s = now_s();
  ++state_.version;
  cv_.notify_all();
}

EngineLoop::EngineLoop(std::shared_ptr<Model> model, const SchedulerConfig& config, int threads)
    : scheduler_(std::move(model), config), threads_(threads) {
  FDL_CHECK(threads >= 0, "threads must be >= 0, got ", threads);
  stats_ = scheduler_.stats();
  thread_ = std::thread([this] { run(); });
}

EngineLoop::~EngineLoop() { close(); }

void EngineLoop::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<Request> EngineLoop::submit(std::vector<int32_t> prompt, const GenerationParams& params) {
  int64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    FDL_CHECK(!stop_, "the engine is closed");
    id = next_id_++;
  }
  std::unique_ptr<Sequence> seq = scheduler_.make_sequence(id, std::move(prompt), params);  // throws when invalid
  auto req = std::make_shared<Request>();
  req->id_ = id;
  req->loop_ = this;
  req->state_.prompt_len = seq->prompt_len();
  req->state_.submitted_s = now_s();
  {
    std::lock_guard<std::mutex> lock(mu_);
    FDL_CHECK(!stop_, "the engine is closed");
    live_[id] = req;
    inbox_.push_back(std::move(seq));
  }
  wake_.notify_all();
  return req;
}

void EngineLoop::cancel(int64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!live_.count(id)) return;
    cancels_.push_back(id);
  }
  wake_.notify_all();
}

std::vector<float> EngineLoop::logits(const std::vector<int32_t>& tokens, int block_size) {
  std::vector<float> out(tokens.size() * size_t(scheduler_.model().config().vocab_size));
  auto task = std::make_shared<std::packaged_task<void()>>(
      [&] { scheduler_.score(tokens, block_size, out.data()); });
  std::future<void> done = task->get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    FDL_CHECK(!stop_, "the engine is closed");
    jobs_.push_back([task] { (*task)(); });
  }
  // The job holds the only reference: if the loop closes before running it,
  // dropping it breaks the promise and done.get() below throws future_error.
  task.reset();
  wake_.notify_all();
  try {
    done.get();  // rethrows what score threw
  } catch (const std::future_error&) {
    throw InvalidArgument("the engine was closed before the logits were computed");
  }
  return out;
}

SchedulerStats EngineLoop::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

uint64_t EngineLoop::wait_progress(uint64_t seen, double timeout_s) const {
  std::unique_lock<std::mutex> lock(mu_);
  wait_for(progress_cv_, lock, timeout_s, [&] { return steps_ > seen || stop_; });
  return steps_;
}

void EngineLoop::publish_stats() {
  const SchedulerStats st = scheduler_.stats();
  std::lock_guard<std::mutex> lock(mu_);
  stats_ = st;
}

void EngineLoop::publish(Scheduler::Report& report) {
  auto request = [&](int64_t id) -> std::shared_ptr<Request> {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = live_.find(id);
    return it == live_.end() ? nullptr : it->second;
  };
  auto forget = [&](int64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    live_.erase(id);
  };
  for (Sequence* s : report.progressed)
    if (auto r = request(s->id())) r->publish(*s, false);
  for (auto& s : report.finished) {
    if (auto r = request(s->id())) r->publish(*s, true);
    forget(s->id());
  }
  for (auto& f : report.failed) {
    if (auto r = request(f.first->id())) r->end("error", f.second);
    forget(f.first->id());
  }
  report.finished.clear();  // their pages go back to the pool here
  report.failed.clear();
}

void EngineLoop::run() {
  if (threads_ > 0) omp_set_num_threads(threads_);  // per thread: the forwards run on this one
  Scheduler::Report report;
  for (;;) {
    std::vector<std::unique_ptr<Sequence>> arrived;
    std::vector<int64_t> cancels;
    std::vector<std::function<void()>> jobs;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] {
        return stop_ || !inbox_.empty() || !cancels_.empty() || !jobs_.empty() || !scheduler_.idle();
      });
      if (stop_) break;
      arrived.swap(inbox_);
      cancels.swap(cancels_);
      jobs.swap(jobs_);
    }
    for (auto& job : jobs) job();  // exceptions reach the caller through its future
    jobs.clear();
    for (auto& s : arrived) scheduler_.enqueue(std::move(s));
    // Cancelled sequences go first (their pages are free before the caller
    // hears of it); the stats the caller may read next already say so.
    std::vector<std::shared_ptr<Request>> dropped;
    for (int64_t id : cancels) {
      scheduler_.cancel(id);  // false: it ended in the meantime and was published
      std::lock_guard<std::mutex> lock(mu_);
      const auto it = live_.find(id);
      if (it != live_.end()) dropped.push_back(it->second), live_.erase(it);
    }
    if (!dropped.empty()) {
      publish_stats();
      for (auto& r : dropped) r->end("cancelled", "");
    }
    scheduler_.step(&report);  // finished sequences have released their pages when it returns
    publish_stats();
    publish(report);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++steps_;
    }
    progress_cv_.notify_all();
  }
  // Closing: whatever is still queued or running ends here, with its pages.
  std::map<int64_t, std::shared_ptr<Request>> live;
  {
    std::lock_guard<std::mutex> lock(mu_);
    live.swap(live_);
    inbox_.clear();
    jobs_.clear();  // their callers hear that the engine closed
  }
  for (auto& kv : live) {
    scheduler_.cancel(kv.first);
    kv.second->end("error", "the engine was closed before this request finished");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_ = scheduler_.stats();
    ++steps_;
  }
  progress_cv_.notify_all();
}

}  // namespace fastdllm
