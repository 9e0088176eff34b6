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
// Guarded graphs (cuda::graph_capture_if) serve launches queued before the host
// knows whether they are needed (runtime/generation.cc, decisions on the device).
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
  int output = 0;         // 0: logits, 1: greedy top-2, 2: sampling candidates, 3: top-2 + device decisions
  float temperature = 0.f, top_p = 0.f;  // sampling candidates: the kernel's arguments
  int top_k = 0, exclude = -1;
  int variant = 0;        // output 3 (greedy + device decisions): forward kind | sub-block size << 8
  const void* pool = nullptr;  // the KV pages' storage the launches point into
  int64_t pages = 0;      // page-table capacity the forward was laid out for

  auto tie() const { return std::tie(n, n_logits, output, temperature, top_p, top_k, exclude, variant, pool, pages); }
  bool operator<(const GraphKey& o) const { return tie() < o.tie(); }
  bool operator==(const GraphKey& o) const { return tie() == o.tie(); }
};

class GraphCache {
 public:
  struct Backend {
    std::function<void*(const std::function<void()>& body)> capture;  // body's launches -> an executable graph
    std::function<void(void*)> launch;
    std::function<void(void*)> destroy;
    // A guarded graph: body runs only if *flag == value at launch (cuda::graph_capture_if
    // with ops::set_graph_condition first).
    std::function<void*(const int32_t* flag, int32_t value, const std::function<void()>& body)> capture_if;
  };
  // Keys run with a guard are captured guarded; their eager first run is the
  // caller's to make only when the guard holds.
  struct Guard {
    const int32_t* flag = nullptr;
    int32_t value = 0;
  };
  enum class Run { Eager, Captured, Replayed };

  explicit GraphCache(Backend backend, size_t max_entries = 32);
  ~GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  Run run(const GraphKey& key, uint64_t epoch, const std::function<void()>& body, const Guard* guard = nullptr);
  // Launches the key's graph if it is captured (and the epoch unchanged);
  // false, launching nothing, otherwise. What speculative launches use: they
  // must not run eagerly (nothing may grow or be configured behind the host's back).
  bool replay(const GraphKey& key, uint64_t epoch);
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
