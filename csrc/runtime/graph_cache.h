// Replayable forwards: a cache of captured executable graphs keyed by the shape
// of a forward. Plain C++ over a capture/launch/destroy backend, so the policy
// is tested on the CPU in CI (tests/test_graph_cache.py) and the CUDA backend
// (core/cuda_runtime.h) plugs in stream capture and cudaGraphLaunch.
//
// A graph bakes in every kernel argument and buffer address. The model keeps
// both fixed for a key: all step-to-step data (tokens, positions, key limits,
// the page table, output rows) lives in a device staging buffer that is
// rewritten before each launch, and the key holds what shapes the launches
// (token count, output rows, output kind, the pool and its page capacity).
// Buffers that the graphs point into may still move when they grow: the caller
// passes an epoch that changes then, which drops every graph.
//
// Policy: a key's first forward runs eagerly (it grows the allocator's cache and
// sets kernel attributes, which must not happen inside a capture), the second is
// captured and launched, later ones replay. At most max_entries graphs live; the
// least recently used goes first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <tuple>

namespace fastdllm {

struct GraphKey {
  int64_t n = 0;          // tokens in the forward
  int64_t n_logits = 0;   // output rows
  int output = 0;         // 0: logits, 1: greedy top-2, 2: sampling candidates
  float temperature = 0.f, top_p = 0.f;  // sampling candidates: the kernel's arguments
  int top_k = 0, exclude = -1;
  const void* pool = nullptr;  // the KV pages' storage the launches point into
  int64_t pages = 0;      // page-table capacity the forward was laid out for

  auto tie() const { return std::tie(n, n_logits, output, temperature, top_p, top_k, exclude, pool, pages); }
  bool operator<(const GraphKey& o) const { return tie() < o.tie(); }
  bool operator==(const GraphKey& o) const { return tie() == o.tie(); }
};

class GraphCache {
 public:
  struct Backend {
    std::function<void*(const std::function<void()>& body)> capture;  // body's launches -> an executable graph
    std::function<void(void*)> launch;
    std::function<void(void*)> destroy;
  };
  enum class Run { Eager, Captured, Replayed };

  explicit GraphCache(Backend backend, size_t max_entries = 32);
  ~GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  Run run(const GraphKey& key, uint64_t epoch, const std::function<void()>& body);
  void clear();
  size_t size() const { return graphs_.size(); }

 private:
  struct Entry {
    void* exec = nullptr;
    uint64_t last_use = 0;
  };
  Backend backend_;
  size_t max_entries_;
  uint64_t epoch_ = 0, tick_ = 0;
  std::map<GraphKey, Entry> graphs_;
  std::set<GraphKey> seen_;  // keys that ran eagerly once
};

}  // namespace fastdllm
