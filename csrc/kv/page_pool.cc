#include "fastdllm/error.h"
#include "fastdllm/kv_cache.h"

namespace fastdllm {

PagePool::PagePool(const KVGeometry& g, int64_t max_pages, Device device) : geom_(g), device_(device) {
  FDL_CHECK(g.num_layers > 0 && g.num_kv_heads > 0 && g.head_dim > 0 && g.page_size > 0,
            "KV cache: bad geometry (layers=", g.num_layers, ", kv_heads=", g.num_kv_heads,
            ", head_dim=", g.head_dim, ", page_size=", g.page_size, ")");
  FDL_CHECK(g.dtype == DType::F32 || g.dtype == DType::BF16, "KV cache: kv_dtype must be float32 or bfloat16, got ",
            dtype_name(g.dtype));
  FDL_CHECK(max_pages > 0 && max_pages < (int64_t(1) << 31), "KV cache: max_pages must be in [1, 2^31), got ",
            max_pages);
  // Virtual memory for the whole budget at once; on the CPU the OS backs it
  // with physical pages only when a KV page is first written.
  storage_ = Buffer(size_t(max_pages) * g.page_bytes(), device);
  refcount_.assign(size_t(max_pages), 0);
  free_.reserve(size_t(max_pages));
  for (int64_t p = max_pages - 1; p >= 0; --p) free_.push_back(int32_t(p));
}

void PagePool::check_page(int32_t page, const char* what) const {
  FDL_CHECK(page >= 0 && page < capacity() && refcount_[size_t(page)] > 0, "KV cache: ", what,
            " of page ", page, ", which is not allocated");
}

int32_t PagePool::allocate() {
  if (free_.empty())
    throw BudgetExceeded(detail::concat("KV cache budget exceeded: all ", capacity(), " pages (",
                                        geom_.page_size, " tokens and ", geom_.page_bytes(),
                                        " bytes each) are in use"));
  const int32_t p = free_.back();
  free_.pop_back();
  refcount_[size_t(p)] = 1;
  return p;
}

void PagePool::retain(int32_t page) {
  check_page(page, "retain");
  ++refcount_[size_t(page)];
}

void PagePool::release(int32_t page) {
  check_page(page, "release");
  if (--refcount_[size_t(page)] == 0) free_.push_back(page);
}

PagedKV PagePool::layer(int layer) const {
  FDL_CHECK(layer >= 0 && layer < geom_.num_layers, "KV cache: layer ", layer, " out of range");
  return store().layer(layer);
}

void PageTable::reserve_tokens(int64_t n_tokens) {
  const int64_t ps = pool_->geometry().page_size;
  const size_t need = size_t((n_tokens + ps - 1) / ps);
  const size_t before = pages_.size();
  try {
    while (pages_.size() < need) pages_.push_back(pool_->allocate());
  } catch (...) {
    while (pages_.size() > before) {
      pool_->release(pages_.back());
      pages_.pop_back();
    }
    throw;
  }
}

void PageTable::share(int32_t page) {
  pool_->retain(page);
  pages_.push_back(page);
}

std::vector<int32_t> PageTable::take_all() {
  std::vector<int32_t> out;
  out.swap(pages_);
  return out;
}

void PageTable::clear() {
  for (int32_t p : pages_) pool_->release(p);
  pages_.clear();
}

}  // namespace fastdllm
