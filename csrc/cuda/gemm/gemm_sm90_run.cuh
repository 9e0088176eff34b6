// Shared by the GEMM translation units: checks, workspace and launch of one
// CUTLASS 3.x GemmUniversalAdapter on the runtime's stream.
#pragma once
#include <cuda_runtime.h>

#include "core/caching_allocator.h"
#include "core/cuda_runtime.h"
#include "cutlass/cutlass.h"
#include "cutlass/kernel_hardware_info.h"

namespace fastdllm::cuda {

void set_gemm_error(const char* msg);

// The SM count, queried once (CUTLASS would otherwise query it per launch).
inline int sm_count() {
  static const int n = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(0);
  return n;
}

template <class Gemm>
int run_gemm(const typename Gemm::Arguments& args, const char* name) {
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) {
    set_gemm_error(name);
    return 2;
  }
  const cudaStream_t s = static_cast<cudaStream_t>(stream_handle());
  // Stream-K needs a small workspace for partial tiles; recycled, never cudaMalloc'd on the decode path.
  DeviceScratch workspace(device_allocator(), Gemm::get_workspace_size(args));
  if (gemm.initialize(args, workspace.get(), s) != cutlass::Status::kSuccess || gemm.run(s) != cutlass::Status::kSuccess) {
    set_gemm_error(name);
    return 3;
  }
  return 0;
}

}  // namespace fastdllm::cuda
