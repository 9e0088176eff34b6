#include "model/graph_cache.h"

#include <utility>

namespace fastdllm {

GraphCache::GraphCache(Backend backend, size_t max_entries)
    : backend_(std::move(backend)), max_entries_(max_entries < 1 ? 1 : max_entries) {}

GraphCache::~GraphCache() { clear(); }

void GraphCache::clear() {
  for (auto& kv : graphs_) backend_.destroy(kv.second.exec);
  graphs_.clear();
  seen_.clear();
}

GraphCache::Run GraphCache::run(const GraphKey& key, uint64_t epoch, const std::function<void()>& body) {
  if (epoch != epoch_) {
    clear();
    epoch_ = epoch;
  }
  ++tick_;
  const auto it = graphs_.find(key);
  if (it != graphs_.end()) {
    it->second.last_use = tick_;
    backend_.launch(it->second.exec);
    return Run::Replayed;
  }
  if (!seen_.count(key)) {
    body();
    seen_.insert(key);
    return Run::Eager;
  }
  if (graphs_.size() >= max_entries_) {
    auto lru = graphs_.begin();
    for (auto g = graphs_.begin(); g != graphs_.end(); ++g)
      if (g->second.last_use < lru->second.last_use) lru = g;
    backend_.destroy(lru->second.exec);
    graphs_.erase(lru);
  }
  void* exec = backend_.capture(body);  // throws: nothing is stored, the next call tries again
  graphs_[key] = Entry{exec, tick_};
  backend_.launch(exec);
  return Run::Captured;
}

}  // namespace fastdllm
