// Entry points of the CUDA kernels (csrc/cuda/**.cu). Plain C++: pointers, sizes
// and a stream, a status back. Declared here so the op table and the bindings can
// reach them without including CUDA headers.
#pragma once
#include <cstdint>

namespace fastdllm::cuda {

// Status codes of a kernel launch: 0 = ok, otherwise a CUTLASS/CUDA failure
// described by last_error().
int gemm_bf16_sm90(const void* a, const void* w, void* d, int64_t m, int64_t n, int64_t k,
                   void* stream);
const char* last_error();

}  // namespace fastdllm::cuda
