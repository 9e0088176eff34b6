// The hierarchical KV cache's pages (level 1 and the active blocks' level 2):
//   PagePool     fixed-size pages (fastdllm/paged_kv.h KVGeometry: all layers'
//                K and V of page_size tokens, fp32 or bf16), reference-counted;
//   PageTable    the pages one sequence holds, in token order (RAII);
//   KVCache      the pool + the prefix cache (fastdllm/prefix_cache.h) + page
//                reservations: what the scheduler admits sequences against.
// The pool's size is fixed when it is made (the memory budget). Admission
// reserves a sequence's worst case, so a running sequence never fails to get a
// page: a request that cannot be served waits, or, when it could never fit,
// is refused with BudgetExceeded naming the budget.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "fastdllm/paged_kv.h"
#include "fastdllm/prefix_cache.h"
#include "fastdllm/tensor.h"

namespace fastdllm {

class PagePool {
 public:
  PagePool(const KVGeometry& g, int64_t max_pages, Device device = Device::CPU);

  const KVGeometry& geometry() const { return geom_; }
  Device device() const { return device_; }
  int64_t capacity() const { return int64_t(refcount_.size()); }
  int64_t free_pages() const { return int64_t(free_.size()); }
  int64_t pages_in_use() const { return capacity() - free_pages(); }
  int32_t refcount(int32_t page) const { return refcount_.at(size_t(page)); }
  // Bytes of page storage ("max_memory" when it was given as a budget).
  size_t storage_bytes() const { return size_t(capacity()) * geom_.page_bytes(); }

  int32_t allocate();          // refcount 1; throws BudgetExceeded when the pool is full
  void retain(int32_t page);   // one more owner (prefix sharing)
  void release(int32_t page);  // back to the free list when the last owner lets go

  // The page storage as forwards address it (page ids index it directly).
  KVStore store() const { return KVStore{storage_.data(), geom_, device_, capacity()}; }
  PagedKV layer(int layer) const;

 private:
  void check_page(int32_t page, const char* what) const;
  KVGeometry geom_;
  Device device_;
  Buffer storage_;
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;
};

// The pages one sequence holds, in token order. Releases them when destroyed.
class PageTable {
 public:
  explicit PageTable(PagePool* pool) : pool_(pool) {}
  ~PageTable() { clear(); }
  PageTable(const PageTable&) = delete;
  PageTable& operator=(const PageTable&) = delete;

  // Allocates pages until at least n_tokens fit; all-or-nothing on BudgetExceeded.
  void reserve_tokens(int64_t n_tokens);
  void push(int32_t page) { pages_.push_back(page); }  // takes over one reference
  void share(int32_t page);                            // one more reference to a page held elsewhere
  std::vector<int32_t> take_all();                     // hands every reference over to the caller
  void clear();

  const std::vector<int32_t>& pages() const { return pages_; }
  int64_t capacity_tokens() const { return int64_t(pages_.size()) * pool_->geometry().page_size; }
  PagePool* pool() const { return pool_; }

 private:
  PagePool* pool_;
  std::vector<int32_t> pages_;
};

class KVCache;

// Pages promised to one sequence at admission; take() turns one into an
// allocated page. What is left goes back when the reservation is dropped.
class PageReservation {
 public:
  PageReservation() = default;
  PageReservation(KVCache* kv, int64_t pages) : kv_(kv), left_(pages) {}
  ~PageReservation() { reset(); }
  PageReservation(PageReservation&& o) noexcept : kv_(o.kv_), left_(o.left_) { o.left_ = 0; }
  PageReservation& operator=(PageReservation&& o) noexcept;
  PageReservation(const PageReservation&) = delete;
  PageReservation& operator=(const PageReservation&) = delete;

  int32_t take();  // refcount 1; evicts an unused cached prefix page when the pool is full
  int64_t left() const { return left_; }
  void reset();

 private:
  KVCache* kv_ = nullptr;
  int64_t left_ = 0;
};

class KVCache {
 public:
  KVCache(const KVGeometry& g, int64_t max_pages, Device device, bool prefix_cache);

  PagePool& pool() { return pool_; }
  const PagePool& pool() const { return pool_; }
  PrefixCache& prefix() { return prefix_; }
  const PrefixCache& prefix() const { return prefix_; }

  // Pages a new reservation could get now: free ones plus cached prefix pages
  // nobody uses (evictable), less what running sequences were promised.
  int64_t available() const;
  // Reserves `pages` more, plus `pinned`: evictable pages a prefix match is
  // about to retain (they stop being evictable). False, changing nothing, when
  // they do not fit now.
  bool try_reserve(int64_t pages, int64_t pinned, PageReservation* out);
  int64_t reserved() const { return reserved_; }
  // Pages held by running sequences (cached pages nobody uses are not in use).
  int64_t pages_in_use() const { return pool_.pages_in_use() - prefix_.evictable_pages(); }

 private:
  friend class PageReservation;
  int32_t allocate_reserved();
  PagePool pool_;
  PrefixCache prefix_;
  int64_t reserved_ = 0;
};

}  // namespace fastdllm
