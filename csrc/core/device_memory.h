// Raw allocation per device. CPU: 64-byte aligned (one cache line, one AVX-512
// register). CUDA: the backend's allocator when it is built, else an error.
#pragma once
#include <cstddef>

#include "fastdllm/dtype.h"

namespace fastdllm {
void* device_alloc(Device dev, size_t nbytes);
void device_free(Device dev, void* p);
// Copies between any host/device pair (synchronous). On the CPU, memcpy.
void copy_bytes(void* dst, const void* src, size_t nbytes, Device dev);
}  // namespace fastdllm
