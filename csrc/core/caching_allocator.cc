#include "core/caching_allocator.h"

#include <new>
#include <utility>

namespace fastdllm {

namespace {
constexpr size_t kSmall = size_t(1) << 20;
constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t(2) << 20;
}  // namespace

size_t CachingAllocator::round_size(size_t n) {
  if (n == 0) n = 1;
  const size_t r = n < kSmall ? kSmallRound : kLargeRound;
  return (n + r - 1) / r * r;
}

CachingAllocator::CachingAllocator(RawAlloc raw_alloc, RawFree raw_free)
    : raw_alloc_(std::move(raw_alloc)), raw_free_(std::move(raw_free)) {}

CachingAllocator::~CachingAllocator() { empty_cache(); }

void* CachingAllocator::raw(size_t size) {
  void* p = raw_alloc_(size);
  if (!p) throw std::bad_alloc();
  ++stats_.raw_allocs;
  return p;
}

void* CachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;  // scratch a launch turned out not to need
  const size_t size = round_size(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_.lower_bound(size);
  void* p = nullptr;
  size_t got = size;
  if (it != free_.end() && it->first <= 2 * size) {
    p = it->second;
    got = it->first;
    free_.erase(it);
    stats_.cached_bytes -= got;
    ++stats_.cache_hits;
  } else {
    try {
      p = raw(size);
    } catch (...) {
      // Out of memory with blocks parked in the cache: give them back, try once more.
      if (free_.empty()) throw;
      for (auto& kv : free_) {
        raw_free_(kv.second);
        ++stats_.raw_frees;
      }
      free_.clear();
      stats_.cached_bytes = 0;
      ++generation_;
      p = raw(size);
    }
  }
  in_use_.emplace(p, got);
  stats_.in_use_bytes += got;
  return p;
}

void CachingAllocator::release(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = in_use_.find(p);
  if (it == in_use_.end()) return;  // not ours: ignore rather than corrupt the cache
  const size_t size = it->second;
  in_use_.erase(it);
  stats_.in_use_bytes -= size;
  free_.emplace(size, p);
  stats_.cached_bytes += size;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& kv : free_) {
    raw_free_(kv.second);
    ++stats_.raw_frees;
  }
  if (!free_.empty()) ++generation_;
  free_.clear();
  stats_.cached_bytes = 0;
}

uint64_t CachingAllocator::generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return generation_;
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace fastdllm
