// A caching allocator for transient device memory (GEMM operand copies and
// workspaces, logits scratch): freed blocks go back to a cache keyed by
// rounded size and are handed out again, so that once the first forward of each
// shape has run, the decode path makes no cudaMalloc/cudaFree calls (which
// synchronize the device). Plain C++ over a raw allocate/free pair: the CUDA
// backend plugs in cudaMalloc/cudaFree, the tests a host allocator with a
// budget, so the logic runs in CI without a GPU.
//
// Stream semantics: the runtime issues all device work on one stream, so a
// block released after its last use was enqueued may be reused by later work on
// that stream without an event (stream order makes it safe). A multi-stream
// runtime would need per-block events (as PyTorch's allocator records).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

namespace fastdllm {

class CachingAllocator {
 public:
  using RawAlloc = std::function<void*(size_t)>;  // throws (or returns null) when out of memory
  using RawFree = std::function<void(void*)>;

  struct Stats {
    size_t in_use_bytes = 0, cached_bytes = 0;
    int64_t raw_allocs = 0, raw_frees = 0, cache_hits = 0;
  };

  CachingAllocator(RawAlloc raw_alloc, RawFree raw_free);
  ~CachingAllocator();  // returns the cached blocks; blocks still in use are the owner's bug, left alone
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least nbytes (rounded, see round_size). A cached block is
  // reused when it is at most twice the rounded size; otherwise a raw
  // allocation, and if that fails the cache is emptied and it is tried once
  // more before the failure propagates. Zero bytes: null, and nothing is taken.
  void* allocate(size_t nbytes);
  void release(void* p);  // p from allocate(); null is ignored
  void empty_cache();     // returns every cached block to the raw allocator
  Stats stats() const;
  // Changes whenever cached blocks are returned to the raw allocator: holders
  // of addresses of released blocks (captured CUDA graphs) must drop them then.
  uint64_t generation() const;

  // < 1 MiB: a multiple of 512 bytes; above: a multiple of 2 MiB (fewer distinct
  // sizes for the large GEMM scratch, so blocks are reused across shapes).
  static size_t round_size(size_t nbytes);

 private:
  void* raw(size_t size);
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;           // size -> block
  std::unordered_map<void*, size_t> in_use_;    // block -> size
  Stats stats_;
  uint64_t generation_ = 0;
};

// A block from an allocator for the lifetime of a scope.
class DeviceScratch {
 public:
  DeviceScratch(CachingAllocator& a, size_t nbytes) : a_(a), p_(a.allocate(nbytes)) {}
  ~DeviceScratch() { a_.release(p_); }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  void* get() const { return p_; }
  template <class T>
  T* as() const { return static_cast<T*>(p_); }

 private:
  CachingAllocator& a_;
  void* p_;
};

}  // namespace fastdllm
