// The CUDA runtime as the rest of the code sees it: whether the backend was
// built, which devices are present, and device memory. Without a CUDA build
// every call answers "not built" or throws; nothing here needs a GPU to import.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/caching_allocator.h"

namespace fastdllm::cuda {

struct Status {
  bool built = false;          // compiled with the CUDA backend
  int runtime_version = 0;     // cudart version linked in (e.g. 13000)
  int driver_version = 0;      // 0 when no driver is installed
  int device_count = 0;
  std::vector<std::string> devices;  // "NVIDIA H100 80GB HBM3 (sm_90)"
  std::string message;         // why there is no usable device, when there is none
};

Status status();
bool available();  // built and at least one device
void* device_malloc(size_t nbytes);
void device_release(void* p);
// Synchronous copies; pointers may be host or device (unified addressing).
// Ordered after all work queued on stream().
void copy(void* dst, const void* src, size_t nbytes);
// Host (pageable) -> device, queued on stream() without waiting: the source may
// be reused once this returns (the driver stages pageable memory before it does).
void upload_async(void* dst, const void* src, size_t nbytes);
// Device -> host, queued on stream() without waiting: dst is valid after the
// next synchronous copy or synchronize().
void download_async(void* dst, const void* src, size_t nbytes);
// Synchronous 2D copy of rows x width bytes between pitched buffers, ordered
// after all work queued on stream() (one wait for e.g. a prefix of every row).
void copy_rows(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width, size_t rows);

// The one stream all device work of the runtime is queued on (a cudaStream_t;
// void* so that host code needs no CUDA headers). Created on first use,
// non-blocking, never the legacy default stream, so that forwards can be
// captured into CUDA graphs.
void* stream_handle();
void synchronize();  // waits for stream(); throws naming the first failed kernel's error

// Transient device memory (kernel scratch, GEMM workspaces): cudaMalloc'd once
// per size class, then recycled (core/caching_allocator.h). Persistent buffers
// (weights, KV pages, the activation arena) use device_malloc.
CachingAllocator& device_allocator();

// CUDA graphs on stream(): body's launches are captured (relaxed mode) into an
// executable graph; launch queues it on stream(). Handles are cudaGraphExec_t.
void* graph_capture(const std::function<void()>& body);
void graph_launch(void* exec);
void graph_destroy(void* exec);

}  // namespace fastdllm::cuda
