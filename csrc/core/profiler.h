// A per-op wall-clock profile of model forwards, off by default. When enabled
// (bench scripts do so through _C.profile_start), each ScopedOpTimer adds its
// elapsed time to a named bucket; reading the profile resets it. Disabled, a
// timer costs one relaxed atomic load.
#pragma once
#include <chrono>
#include <map>
#include <string>

namespace fastdllm::profiler {

bool enabled();
void set_enabled(bool on);
struct Entry {
  long long calls = 0;
  double seconds = 0.0;
};
std::map<std::string, Entry> take();  // returns and clears the buckets
void add(const char* name, double seconds);

class ScopedOpTimer {
 public:
  explicit ScopedOpTimer(const char* name) : name_(enabled() ? name : nullptr) {
    if (name_) t0_ = std::chrono::steady_clock::now();
  }
  ~ScopedOpTimer() {
    if (name_) add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  }

 private:
  const char* name_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace fastdllm::profiler
