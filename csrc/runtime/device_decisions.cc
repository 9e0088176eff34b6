#include "runtime/device_decisions.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <mutex>

#include "core/cuda_runtime.h"
#include "fastdllm/error.h"
#include "ops/denoise_rule.h"

namespace fastdllm {

namespace {
int64_t slot_words(int block) { return denoise::kHeaderWords + block; }
}  // namespace

// Page-locked result slots and their events outlive a generation and serve the
// next one: cudaHostAlloc is a slow driver call that a batch of prompts would
// otherwise pay per prompt. Never freed (at exit the CUDA context may be gone).
struct DeviceDecisions::HostSlots {
  int32_t* results = nullptr;
  size_t words = 0;
  void* events[kSlots] = {};
};

namespace {
std::mutex g_slots_mutex;
std::vector<DeviceDecisions::HostSlots*>& free_slots() {
  static auto* v = new std::vector<DeviceDecisions::HostSlots*>();
  return *v;
}
}  // namespace

DeviceDecisions::HostSlots* DeviceDecisions::acquire_slots(size_t words) {
  {
    std::lock_guard<std::mutex> lock(g_slots_mutex);
    auto& pool = free_slots();
    for (size_t i = 0; i < pool.size(); ++i)
      if (pool[i]->words >= words) {
        HostSlots* s = pool[i];
        pool.erase(pool.begin() + std::ptrdiff_t(i));
        return s;
      }
  }
  auto s = std::make_unique<HostSlots>();
  s->words = words;
  s->results = static_cast<int32_t*>(cuda::host_alloc(words * 4));
  try {
    for (void*& e : s->events) e = cuda::event_create();
  } catch (...) {
    for (void* e : s->events)
      if (e) cuda::event_destroy(e);
    cuda::host_free(s->results);
    throw;
  }
  return s.release();
}

DeviceDecisions::DeviceDecisions(Model& model, int block, bool use_block_cache)
    : model_(model), block_(block), use_block_cache_(use_block_cache) {
  const size_t words = size_t(kSlots * slot_words(block));
  if (model.device() == Device::CPU) {
    host_results_.resize(words);
    results_ = host_results_.data();
    return;
  }
  slots_ = acquire_slots(words);
  results_ = slots_->results;
  std::copy(std::begin(slots_->events), std::end(slots_->events), std::begin(events_));
}

DeviceDecisions::~DeviceDecisions() {
  try {
    drain();
  } catch (...) {  // a failed kernel was reported to whoever waited last; nothing to add here
  }
  if (slots_) {
    std::lock_guard<std::mutex> lock(g_slots_mutex);
    free_slots().push_back(slots_);
  }
}

void DeviceDecisions::drain() {
  while (!queue_.empty()) {
    const Launch l = queue_.front();
    queue_.pop_front();
    if (events_[l.slot]) cuda::event_wait(events_[l.slot]);
  }
}

bool DeviceDecisions::launch(int32_t kind, bool speculative) {
  const int slot = next_slot_;
  if (!model_.denoise_launch(this, kind, speculative, results_ + slot * slot_words(block_), events_[slot]))
    return false;
  queue_.push_back({kind, slot});
  next_slot_ = (next_slot_ + 1) % kSlots;
  return true;
}

void DeviceDecisions::start(const std::vector<int32_t>& state, const PagePool* pool) {
  FDL_CHECK(queue_.empty(), "DeviceDecisions::start with launches in flight");
  model_.denoise_begin(this, state.data(), pool);
  launch(state[0], false);  // the header's go
  chain_ = true;
  forwards_ = reinterpret_cast<const denoise::DenoiseHeader*>(state.data())->forwards;
}

// Without the block cache every denoising forward is a whole-block one. With
// it, forwards alternate between kinds (whole block while the sub-block's first
// token is masked, then sub-block only, then the next sub-block's whole-block
// refresh), and queueing them alternately covers every order at the cost of a
// skipped launch where two of one kind follow each other.
int32_t DeviceDecisions::speculative_kind() const {
  if (!use_block_cache_) return denoise::kFull;
  return queue_.back().kind == denoise::kFull ? denoise::kSub : denoise::kFull;
}

DeviceDecisions::Result DeviceDecisions::next() {
  FDL_CHECK(!queue_.empty(), "DeviceDecisions::next with nothing in flight");
  while (chain_ && int(queue_.size()) < 1 + kAhead)
    if (!launch(speculative_kind(), true)) break;
  const Launch l = queue_.front();
  queue_.pop_front();
  if (events_[l.slot]) cuda::event_wait(events_[l.slot]);
  const int32_t* state = results_ + l.slot * slot_words(block_);
  // Every launch, run or skipped, brings the device's state back: once it names
  // no next forward the host has to act, and nothing more is queued.
  const auto& h = *reinterpret_cast<const denoise::DenoiseHeader*>(state);
  if (h.go == denoise::kNone) chain_ = false;
  const bool ran = h.forwards != forwards_;  // a skipped launch leaves the count as it was
  forwards_ = h.forwards;
  return {l.kind, ran, state};
}

}  // namespace fastdllm
