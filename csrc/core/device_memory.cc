#include "core/device_memory.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "fastdllm/error.h"
#include "core/cuda_runtime.h"

namespace fastdllm {

void* device_alloc(Device dev, size_t nbytes) {
  if (nbytes == 0) nbytes = 64;
  if (dev == Device::CUDA) return cuda::device_malloc(nbytes);
  // Weights and KV pages are streamed every forward: back large buffers with
  // 2 MiB pages where the kernel allows it (THP in "madvise" mode), which
  // removes most TLB misses from the weight stream.
  constexpr size_t kHuge = size_t(2) << 20;
  static const bool allow_huge = [] {
    const char* e = std::getenv("FASTDLLM_HUGEPAGES");  // "0" turns it off (for A/B timing)
    return !(e && e[0] == '0');
  }();
  const bool huge = allow_huge && nbytes >= 2 * kHuge;
  const size_t align = huge ? kHuge : 64;
  void* p = std::aligned_alloc(align, (nbytes + align - 1) / align * align);
  if (!p) throw std::bad_alloc();
  if (huge) madvise(p, (nbytes + align - 1) / align * align, MADV_HUGEPAGE);
  return p;
}

void copy_bytes(void* dst, const void* src, size_t nbytes, Device dev) {
  if (nbytes == 0) return;
  if (dev == Device::CUDA) return cuda::copy(dst, src, nbytes);
  std::memcpy(dst, src, nbytes);
}

void device_free(Device dev, void* p) {
  if (dev == Device::CUDA) {
    cuda::device_release(p);
    return;
  }
  std::free(p);
}

}  // namespace fastdllm
