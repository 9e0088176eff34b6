#include "core/profiler.h"

#include <atomic>
#include <mutex>

namespace fastdllm::profiler {

namespace {
std::atomic<bool> g_enabled{false};
std::mutex g_mu;
std::map<std::string, Entry>& buckets() {
  static std::map<std::string, Entry> b;
  return b;
}
}  // namespace

bool enabled() { return g_enabled.load(std::memory_order_relaxed); }
void set_enabled(bool on) { g_enabled.store(on); }

void add(const char* name, double seconds) {
  std::lock_guard<std::mutex> lock(g_mu);
  Entry& e = buckets()[name];
  ++e.calls;
  e.seconds += seconds;
}

std::map<std::string, Entry> take() {
  std::lock_guard<std::mutex> lock(g_mu);
  std::map<std::string, Entry> out;
  out.swap(buckets());
  return out;
}

}  // namespace fastdllm::profiler
