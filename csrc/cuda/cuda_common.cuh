// Helpers shared by the CUDA kernels: element loads per weight dtype and
// warp/block reductions. Device code only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_runtime.h"
#include "fastdllm/dtype.h"
#include "fastdllm/error.h"
#include "fastdllm/paged_kv.h"

namespace fastdllm::cuda {

// Every kernel is launched on this stream (see core/cuda_runtime.h).
inline cudaStream_t stream() { return static_cast<cudaStream_t>(stream_handle()); }

template <class T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }

// Stores of fp32 results as the output dtype (bf16: round to nearest even).
__device__ __forceinline__ void store_as(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_as(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store_as(__half* p, float v) { *p = __float2half_rn(v); }

// Calls f with a value of the activation type: float32, or the bfloat16 / float16
// rounding that a producer writes for a GEMM of that weight type.
template <class F>
void by_act_dtype(DType t, F&& f) {
  if (t == DType::BF16) f(__nv_bfloat16{});
  else if (t == DType::F16) f(__half{});
  else f(float{});
}

// The block of one kv head in the page that a sequence's page table (its
// kv_indices row) lists at page_idx (fastdllm/paged_kv.h PagedKV; offset:
// kv.k_offset or kv.v_offset; E the pages' element type).
template <class E>
__device__ __forceinline__ E* head_block(const PagedKV& kv, const int32_t* table, int64_t offset, int64_t head,
                                         int64_t page_idx) {
  return static_cast<E*>(kv.base) + int64_t(table[page_idx]) * kv.page_stride + offset + head * kv.head_stride;
}

// Calls f with a value of the KV pages' element type (float32 or bfloat16).
template <class F>
void by_kv_dtype(DType t, F&& f) {
  if (t == DType::BF16) f(__nv_bfloat16{});
  else f(float{});
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float t = lane < nw ? part[lane] : 0.f;
  return warp_sum(t);
}

// Blocks for a grid-stride loop over n elements (capped: the loop covers the rest).
inline unsigned grid_for(int64_t n, int threads = 256) {
  const int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 65535 ? b : 65535);
}

// Calls f with a value of the device element type for a weight dtype.
template <class F>
void by_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); break;
    case DType::BF16: f(__nv_bfloat16{}); break;
    case DType::F16: f(__half{}); break;
    default: throw InvalidArgument("CUDA kernels take float32, float16 or bfloat16 weights and biases");
  }
}

}  // namespace fastdllm::cuda
