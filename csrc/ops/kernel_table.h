// The one place where ops are dispatched by device: a table of kernel entry
// points per backend. A backend that lacks a kernel leaves its entry null and
// the front-end raises an error naming the op and the device.
#pragma once
#include "fastdllm/ops.h"
#include "fastdllm/weight_format.h"

namespace fastdllm::ops {

struct KernelTable {
  void (*embedding)(const void*, DType, bool, int64_t, int64_t, const int32_t*, int64_t, float*) = nullptr;
  void (*rms_norm)(const float*, const void*, DType, int64_t, int64_t, float, void*, DType) = nullptr;
  void (*rope)(float*, int64_t, int64_t, int64_t, const int32_t*, const float*) = nullptr;
  void (*linear)(const void*, DType, const void*, DType, bool, const void*, DType, const float*, float*,
                 int64_t, int64_t, int64_t) = nullptr;
  // Integer-format weights (fastdllm/weight_format.h); silu: the fused gate/up GEMM.
  void (*linear_int)(const void*, DType, const WeightView&, const void*, DType, const float*, float*, int64_t,
                     bool) = nullptr;
  // Fp8 weights (W8A8 with per-token activation scales): CUDA only.
  void (*linear_fp8)(const void*, DType, const WeightView&, const void*, DType, const float*, float*,
                     int64_t) = nullptr;
  void (*silu_mul)(const float*, void*, DType, int64_t, int64_t) = nullptr;
  void (*add)(const float*, const float*, float*, int64_t) = nullptr;
  void (*kv_write)(const PagedKV&, const KVBatch&, const float*, const float*) = nullptr;
  void (*qkv_rope_append)(const float*, int64_t, const float*, const PagedKV&, const KVBatch&, float*) = nullptr;
  void (*attention)(const float*, int64_t, const PagedKV&, const KVBatch&, float, const AttentionPlanView&, void*,
                    DType) = nullptr;
  void (*argmax_prob)(const float*, int64_t, int64_t, int32_t*, float*) = nullptr;
  void (*linear_silu_mul)(const float*, const uint16_t*, float*, int64_t, int64_t, int64_t) = nullptr;
  void (*gather_rows)(const float*, const int32_t*, int64_t, int64_t, float*) = nullptr;
  void (*lm_head_top2_int)(const float*, const WeightView&, int64_t, int32_t*, float*) = nullptr;
  void (*lm_head_top2)(const float*, const void*, DType, bool, int64_t, int64_t, int64_t, int32_t*,
                       float*) = nullptr;
  void (*sampling_candidates)(const float*, int64_t, int64_t, float, float, int, int32_t, float*, int32_t*,
                              int32_t*) = nullptr;
};

const KernelTable& kernels(Device device);

}  // namespace fastdllm::ops
