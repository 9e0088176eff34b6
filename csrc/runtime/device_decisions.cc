#include "runtime/device_decisions.h"

#include "core/cuda_runtime.h"
#include "fastdllm/error.h"
#include "ops/denoise_rule.h"

namespace fastdllm {

namespace {
int64_t slot_words(int block) { return denoise::kHeaderWords + block; }
}  // namespace

DeviceDecisions::DeviceDecisions(Model& model, int block, bool use_block_cache)
    : model_(model), block_(block), use_block_cache_(use_block_cache) {
  const size_t words = size_t(kSlots * slot_words(block));
  if (model.device() == Device::CPU) {
    host_results_.resize(words);
    results_ = host_results_.data();
    return;
  }
  results_ = static_cast<int32_t*>(cuda::host_alloc(words * 4));
  try {
    for (void*& e : events_) e = cuda::event_create();
  } catch (...) {
    for (void* e : events_)
      if (e) cuda::event_destroy(e);
    cuda::host_free(results_);
    throw;
  }
}

DeviceDecisions::~DeviceDecisions() {
  try {
    drain();
  } catch (...) {  // a failed kernel was reported to whoever waited last; nothing to add here
  }
  if (model_.device() == Device::CPU) return;
  for (void* e : events_) cuda::event_destroy(e);
  cuda::host_free(results_);
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
  if (state[0] == denoise::kNone) chain_ = false;
  return {l.kind, state};
}

}  // namespace fastdllm
