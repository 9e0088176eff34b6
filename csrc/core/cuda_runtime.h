// The CUDA runtime as the rest of the code sees it: whether the backend was
// built, which devices are present, and device memory. Without a CUDA build
// every call answers "not built" or throws; nothing here needs a GPU to import.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

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
void copy(void* dst, const void* src, size_t nbytes);

}  // namespace fastdllm::cuda
