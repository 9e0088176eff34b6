// Level 1 of the hierarchical KV cache: a pool of fixed-size pages. A page holds
// page_size tokens (one decode block) of K and V for every layer:
//   page[layer][k|v][kv_head][page_size * head_dim]   (fp32; K transposed, see PagedKV)
// Pages are reference-counted so that two sequences can point at the same
// committed prefix; a sequence's cache is its page table (PageTable below).
// The pool's size is fixed when it is made (the memory budget); running out
// raises BudgetExceeded naming the budget, and leaves the pool as it was.
#pragma once
#include <cstdint>
#include <vector>

#include "fastdllm/ops.h"
#include "fastdllm/tensor.h"

namespace fastdllm {

struct KVGeometry {
  int num_layers = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  int64_t page_elems() const { return int64_t(num_layers) * 2 * num_kv_heads * page_size * head_dim; }
  size_t page_bytes() const { return size_t(page_elems()) * sizeof(float); }
};

class PagePool {
 public:
  PagePool(const KVGeometry& g, int64_t max_pages, Device device = Device::CPU);

  const KVGeometry& geometry() const { return geom_; }
  Device device() const { return device_; }
  int64_t capacity() const { return int64_t(refcount_.size()); }
  int64_t pages_in_use() const { return capacity() - int64_t(free_.size()); }
  int32_t refcount(int32_t page) const { return refcount_.at(size_t(page)); }

  int32_t allocate();          // refcount 1; throws BudgetExceeded when the pool is full
  void retain(int32_t page);   // one more owner (prefix sharing)
  void release(int32_t page);  // back to the free list when the last owner lets go

  // One layer's K/V addressed through the given page table.
  PagedKV layer(int layer, const int32_t* page_table, int num_pages) const;

 private:
  void check_page(int32_t page, const char* what) const;
  KVGeometry geom_;
  Device device_;
  Buffer storage_;
  std::vector<int32_t> refcount_;
  std::vector<int32_t> free_;
};

// The pages one sequence owns, in token order. Releases them when destroyed.
class PageTable {
 public:
  explicit PageTable(PagePool* pool) : pool_(pool) {}
  ~PageTable() { clear(); }
  PageTable(const PageTable&) = delete;
  PageTable& operator=(const PageTable&) = delete;

  // Allocates pages until at least n_tokens fit; all-or-nothing on BudgetExceeded.
  void reserve_tokens(int64_t n_tokens);
  void push(int32_t page) { pages_.push_back(page); }  // takes over one reference
  void share_from(const PageTable& other, int num_pages);  // prefix sharing: retain their pages
  void clear();

  const std::vector<int32_t>& pages() const { return pages_; }
  int64_t capacity_tokens() const { return int64_t(pages_.size()) * pool_->geometry().page_size; }
  PagePool* pool() const { return pool_; }

 private:
  PagePool* pool_;
  std::vector<int32_t> pages_;
};

}  // namespace fastdllm
