// The denoising forwards of one block with their threshold decisions on the
// model's device (Model::denoise_begin / denoise_launch, ops/denoise_rule.h):
// the host queues the next forwards before it has read the previous result, so
// a GPU goes from one forward to the next without waiting for the host, while
// the host still sees every forward's result in order (Engine.stream yields
// after each). The queue holds the oldest launch plus up to kAhead speculative
// ones; each speculative launch runs only if the decisions before it name its
// kind (whole block or sub-block only) and is skipped otherwise. A skipped launch
// costs a few microseconds of GPU time; a chain ends where the host must act
// (commit, stop) or when nothing of the right kind was queued.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "fastdllm/model.h"

namespace fastdllm {

class DeviceDecisions {
 public:
  DeviceDecisions(Model& model, int block, bool use_block_cache);
  ~DeviceDecisions();  // waits for what is in flight
  DeviceDecisions(const DeviceDecisions&) = delete;
  DeviceDecisions& operator=(const DeviceDecisions&) = delete;

  // Puts a block's state (the denoise state layout; its header's `go` names the
  // forward) on the device and queues that forward.
  void start(const std::vector<int32_t>& state, const PagePool* pool);
  bool busy() const { return !queue_.empty(); }
  struct Result {
    int32_t kind;         // the launch's kind (denoise::kFull / kSub)
    bool ran;             // false: the device skipped it (not the forward its decisions named)
    const int32_t* state; // header + block tokens after it (valid until the next call)
  };
  // Tops the queue up, then waits for the oldest launch and returns its result.
  Result next();
  void drain();

  static constexpr int kAhead = 2;
  static constexpr int kSlots = kAhead + 2;
  struct HostSlots;

 private:
  struct Launch {
    int32_t kind;
    int slot;
  };
  bool launch(int32_t kind, bool speculative);
  int32_t speculative_kind() const;

  Model& model_;
  int block_;
  bool use_block_cache_;
  static HostSlots* acquire_slots(size_t words);
  HostSlots* slots_ = nullptr;  // GPU: page-locked results and events, recycled
  int32_t* results_ = nullptr;  // [kSlots, kHeaderWords + block]
  std::vector<int32_t> host_results_;
  void* events_[kSlots] = {};
  int next_slot_ = 0;
  std::deque<Launch> queue_;
  bool chain_ = false;  // the device's last known state names a next forward
  int32_t forwards_ = 0;  // the device's forward count at the last result (start() uploads 0)
};

}  // namespace fastdllm
