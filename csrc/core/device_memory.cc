#include "core/device_memory.h"

#include <cstdlib>
#include <new>

#include "fastdllm/error.h"
#include "core/cuda_runtime.h"

namespace fastdllm {

void* device_alloc(Device dev, size_t nbytes) {
  if (nbytes == 0) nbytes = 64;
  if (dev == Device::CUDA) return cuda::device_malloc(nbytes);
  void* p = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
  if (!p) throw std::bad_alloc();
  return p;
}

void device_free(Device dev, void* p) {
  if (dev == Device::CUDA) {
    cuda::device_release(p);
    return;
  }
  std::free(p);
}

}  // namespace fastdllm
