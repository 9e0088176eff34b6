// Replayable forwards: a cache of captured executable graphs keyed by the shape
// of a forward. Plain C++ over a capture/launch/destroy backend, so the policy
// is tested on the CPU in CI (tests/test_graph_cache.py) and the CUDA backend
// (core/cuda_runtime.h) plugs in stream capture and cudaGraphLaunch.
//
// A graph bakes in every kernel argument and buffer address. The runner keeps
// both fixed for a key: all step-to-step data (tokens, positions, key limits,
// CSR page tables, the attention work list, output rows) lives in a device
// staging buffer that is rewritten before each launch, and the key holds what
// shapes the launches: the token bucket, the sequence bucket and the output
// rows of a replayable plan (model/forward_plan.h), and the KV store they
// point into. Buffers that the graphs point into may still move when they
// grow: the caller passes an epoch that changes then, which drops every graph.
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
  int64_t tokens = 0;     // token bucket
  int64_t seqs = 0;       // sequence bucket (the padding sequence included)
  int64_t rows = 0;       // greedy output rows as run
  const void* kv = nullptr;  // the KV pages' storage the launches point into

  auto tie() const { return std::tie(tokens, seqs, rows, kv); }
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

  explicit GraphCache(Backend backend, size_t max_entries = 64);
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
