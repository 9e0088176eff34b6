#include "fastdllm/error.h"
#include "fastdllm/kv_cache.h"

namespace fastdllm {

PageReservation& PageReservation::operator=(PageReservation&& o) noexcept {
  if (this != &o) {
    reset();
    kv_ = o.kv_;
    left_ = o.left_;
    o.left_ = 0;
  }
  return *this;
}

void PageReservation::reset() {
  if (kv_ && left_ > 0) kv_->reserved_ -= left_;
  left_ = 0;
}

int32_t PageReservation::take() {
  FDL_CHECK_RT(kv_ && left_ > 0, "KV cache: a sequence took more pages than it reserved at admission");
  const int32_t p = kv_->allocate_reserved();
  --left_;
  --kv_->reserved_;
  return p;
}

KVCache::KVCache(const KVGeometry& g, int64_t max_pages, Device device, bool prefix_cache)
    : pool_(g, max_pages, device), prefix_(&pool_, prefix_cache) {}

int64_t KVCache::available() const { return pool_.free_pages() + prefix_.evictable_pages() - reserved_; }

bool KVCache::try_reserve(int64_t pages, int64_t pinned, PageReservation* out) {
  if (pages < 0 || pages + pinned > available()) return false;
  reserved_ += pages;
  *out = PageReservation(this, pages);
  return true;
}

int32_t KVCache::allocate_reserved() {
  // Reservations never exceed free + evictable pages, so an eviction frees one.
  while (pool_.free_pages() == 0)
    FDL_CHECK_RT(prefix_.evict_one(), "KV cache: no free or evictable page for a reserved allocation");
  return pool_.allocate();
}

}  // namespace fastdllm
