// The engine's background loop: one thread steps the scheduler
// (runtime/scheduler.h) while there is work and sleeps otherwise; callers on
// any thread submit requests and follow them through Request handles. A
// request is validated on the caller's thread (a bad one fails there, alone),
// then queued; its state is published after every forward it takes part in.
// Nothing here knows Python: the bindings release the GIL around every wait.
#pragma once
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runtime/scheduler.h"

namespace fastdllm {

class EngineLoop;

// What a caller sees of one request.
struct RequestState {
  uint64_t version = 0;            // bumped whenever anything below changes
  std::vector<int32_t> decoded;    // the final generated tokens so far (Sequence::decoded_prefix)
  bool done = false;
  std::string finish_reason;       // "stop", "length", "cancelled" or "error" once done
  std::string error;               // why it failed ("error"), or why it was dropped
  std::vector<int32_t> output;     // the generated ids, once done (not for errors)
  std::vector<int32_t> commit_steps;  // per id of output (once done; else of decoded): its forward, 1-based
  int64_t prompt_len = 0;
  int64_t num_forwards = 0;        // as the spec counts them
  int64_t prefix_hit_tokens = 0;   // prompt tokens served by the prefix cache
  std::vector<int64_t> block_lengths;  // once done: each block's length (LLaDA / Dream; AdaBlock's block history)
  double submitted_s = 0, first_forward_s = 0, finished_s = 0;  // steady clock, seconds
};

class Request {
 public:
  int64_t id() const { return id_; }
  // Blocks until the version passes `seen` (or timeout_s passes; < 0: no
  // limit); returns the current version.
  uint64_t wait(uint64_t seen, double timeout_s) const;
  RequestState snapshot() const;
  // Drops the request; returns once the loop has released its pages (at most
  // one forward later), or at once when it has ended already.
  void cancel();

 private:
  friend class EngineLoop;
  void publish(const Sequence& s, bool final);
  void end(const std::string& reason, const std::string& error);
  int64_t id_ = 0;
  EngineLoop* loop_ = nullptr;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  RequestState state_;
};

class EngineLoop {
 public:
  // threads: OpenMP threads of the forwards (0: the OpenMP default).
  EngineLoop(std::shared_ptr<Model> model, const SchedulerConfig& config, int threads);
  ~EngineLoop();
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Validates (throws InvalidArgument / BudgetExceeded naming the problem) and queues.
  std::shared_ptr<Request> submit(std::vector<int32_t> prompt, const GenerationParams& params);
  SchedulerStats stats() const;
  // Scheduler::score on the loop's thread, between two steps (the forward is
  // not shared with requests); blocks until it ran.
  std::vector<float> logits(const std::vector<int32_t>& tokens, int block_size);
  // Blocks until the loop has finished a step after `seen` (or timeout_s);
  // returns the current step count. For waking many waiters with one thread.
  uint64_t wait_progress(uint64_t seen, double timeout_s) const;
  const Scheduler& scheduler() const { return scheduler_; }
  // Stops the thread; requests still queued or running end with an error.
  void close();

 private:
  friend class Request;
  void cancel(int64_t id);
  void run();
  void publish(Scheduler::Report& report);
  // The scheduler's stats as callers read them (computed outside the lock).
  void publish_stats();

  Scheduler scheduler_;
  int threads_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  mutable std::condition_variable progress_cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<int64_t> cancels_;
  std::vector<std::function<void()>> jobs_;  // run on the loop's thread (logits)
  std::map<int64_t, std::shared_ptr<Request>> live_;
  SchedulerStats stats_;
  uint64_t steps_ = 0;
  int64_t next_id_ = 1;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace fastdllm
