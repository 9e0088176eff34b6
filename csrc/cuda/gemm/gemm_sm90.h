// The sm_90a CUTLASS GEMMs behind cuda::linear, one configuration and element
// type per translation unit (each costs minutes and GBs of RAM to compile); the
// configurations themselves are written once, in gemm_sm90_kernel.cuh:
//   gemm_{bf16,f16}_sm90_large.cu    M (tokens) > kSmallM: 128x128x64 tiles,
//                              warp-specialized persistent kernel, bias per column
//                              fused into the epilogue.
//   gemm_{bf16,f16}_sm90_small_m.cu  M <= kSmallM (decoding): the operands are
//                              swapped so that the weight rows fill wgmma's 128-wide
//                              M mode and the few tokens its N mode (64-wide tile),
//                              with a stream-K tile scheduler so that all SMs stream
//                              weights even when the output has only N/128 tiles
//                              (12 for a 1536-wide projection).
// All: bf16 or fp16 operands (x and w of the same type), fp32 accumulation,
// out = x @ w^T (+ bias) (+ residual) in fp32 with the residual read as the
// epilogue's source C (it may alias out: every output element is read and
// written by the same thread of the tile's epilogue). Workspaces come from
// cuda::device_allocator() and all launches go to cuda::stream(), so both are
// capturable in a CUDA graph.
#pragma once
#include <cstdint>

#include "core/launch_plans.h"

namespace fastdllm::cuda {

using plans::kSmallM;

struct GemmSm90Args {
  const void* x;           // bf16 / fp16 [m, k] row-major (activations)
  const void* w;           // same type [n, k] row-major (the checkpoint's layout)
  const float* bias;       // [n] or null
  const float* residual;   // [m, n] or null; may alias out
  float* out;              // [m, n] row-major
  int64_t m, n, k;         // k % 8 == 0 and n % 8 == 0 (16-byte TMA rows)
};

// 0 on success; otherwise a code, and gemm_last_error() says what failed.
int gemm_bf16_sm90_large(const GemmSm90Args& a);
int gemm_bf16_sm90_small_m(const GemmSm90Args& a);
int gemm_f16_sm90_large(const GemmSm90Args& a);
int gemm_f16_sm90_small_m(const GemmSm90Args& a);
// W8A8: x and w E4M3 (K-major), D = acc * x_scale[m] * w_scale[n] + bias[n] + C
// (C = the residual, or zeros). M <= kSmallM, the swapped stream-K configuration;
// k % 16 == 0 and n % 4 == 0.
struct GemmFp8Sm90Args {
  const void* x;           // E4M3 [m, k]
  const void* w;           // E4M3 [n, k]
  const float* x_scale;    // [m]
  const float* w_scale;    // [n]
  const float* bias;       // [n] or null
  const float* c;          // [m, n]: the residual, or zeros
  float* out;              // [m, n]
  int64_t m, n, k;
};
int gemm_fp8_sm90_small_m(const GemmFp8Sm90Args& a);

// W4A16 / W8A16 (gemm_mixed_sm90.cuh): out = x @ (s * q - s * z)^T (+ bias)
// (+ residual), uint4 codes [n, k] two per byte or uint8 codes, bf16 scale and
// zero term (-s*z) [n, k / group].
struct GemmMixedSm90Args {
  const void* x;          // bf16 [m, k]
  const void* w;          // codes [n, k]
  const void* scale;      // bf16 [n, k / group]
  const void* zero;       // bf16 [n, k / group]: -s * z
  int64_t group;
  const float* bias;      // [n] or null
  const float* residual;  // [m, n] or null; may alias out
  float* out;             // [m, n]
  int64_t m, n, k;
};
int gemm_w4a16_sm90(const GemmMixedSm90Args& a);
int gemm_w8a16_sm90(const GemmMixedSm90Args& a);
const char* gemm_last_error();

}  // namespace fastdllm::cuda
