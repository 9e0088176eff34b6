// linear on the GPU: out[M, N] = x[M, K] @ w[N, K]^T (+ bias) (+ residual),
// x and out fp32; the op front-end for the CUTLASS GEMMs (gemm_sm90.h).
//   bf16 / fp16 weights with K % 8 == 0 and N % 8 == 0: x is rounded to the
//     weight type (the precision of PyTorch's bf16 / fp16 matmul) unless its
//     producer already wrote it so, then one CUTLASS kernel with bias and
//     residual fused into its epilogue, picked by plans::choose_gemm: the swapped
//     stream-K configuration up to kSmallM rows (decoding), the 128x128 tiles above.
//   anything else (fp32 weights, odd sizes): a SIMT kernel, one warp per
//     output element, exact fp32 accumulation. Correctness path, not fast.
// Scratch (the rounded copy of x, an fp32 copy of a non-fp32 bias, GEMM
// workspaces) comes from the caching allocator: no cudaMalloc once warm.
#include <string>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/gemm/gemm_sm90.h"
#include "fastdllm/error.h"
#include "core/launch_plans.h"

namespace fastdllm::cuda {

namespace {

thread_local std::string g_gemm_error;

__device__ __forceinline__ void round_to(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void round_to(__half* p, float v) { *p = __float2half_rn(v); }

template <class TX, class TO>
__global__ void to_operand_kernel(const TX* x, TO* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    round_to(&y[i], to_f32(x[i]));
}

template <class T>
__global__ void to_f32_kernel(const T* x, float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = to_f32(x[i]);
}

template <class TX, class TW, class TB>
__global__ void simt_linear_kernel(const TX* x, const TW* w, const TB* bias, const float* residual, float* out,
                                   int64_t m, int64_t n, int64_t k) {
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= m * n) return;
  const int64_t r = warp / n, c = warp % n;
  float s = 0.f;
  for (int64_t p = lane; p < k; p += 32) s += to_f32(x[r * k + p]) * to_f32(w[c * k + p]);
  s = warp_sum(s);
  if (lane == 0) {
    if (bias) s += to_f32(bias[c]);
    if (residual) s += residual[r * n + c];  // read before the write below: aliasing is fine
    out[r * n + c] = s;
  }
}

}  // namespace

void set_gemm_error(const char* msg) { g_gemm_error = msg; }
const char* gemm_last_error() { return g_gemm_error.c_str(); }

void linear(const void* x, DType x_dtype, const void* w, DType wt, bool packed, const void* bias, DType bias_dtype,
            const float* residual, float* out, int64_t m, int64_t n, int64_t k) {
  FDL_CHECK(!packed, "linear: the packed weight layout is CPU-only");
  if (m == 0 || n == 0) return;
  const DType bt = bias ? bias_dtype : DType::F32;
  const plans::GemmKind kind = plans::choose_gemm(wt, m, n, k);
  if (kind != plans::GemmKind::Simt) {
    CachingAllocator& alloc = device_allocator();
    // An operand of the weight type comes straight from its producer (rms_norm /
    // silu_mul / attention); anything else is rounded here.
    const bool direct = x_dtype == wt;
    DeviceScratch xr(alloc, direct ? 0 : size_t(m * k) * 2);
    const void* xa = x;
    if (!direct) {
      by_act_dtype(x_dtype, [&](auto zx) {
        using TX = decltype(zx);
        if (wt == DType::BF16)
          to_operand_kernel<<<grid_for(m * k), 256, 0, stream()>>>(static_cast<const TX*>(x),
                                                                    xr.as<__nv_bfloat16>(), m * k);
        else
          to_operand_kernel<<<grid_for(m * k), 256, 0, stream()>>>(static_cast<const TX*>(x), xr.as<__half>(), m * k);
      });
      check_launch("linear/round_operand");
      xa = xr.get();
    }
    DeviceScratch bias_f32(alloc, bias && bt != DType::F32 ? size_t(n) * 4 : 0);
    const float* b = static_cast<const float*>(bias);
    if (bias && bt != DType::F32) {
      by_dtype(bt, [&](auto zb) {
        using TB = decltype(zb);
        to_f32_kernel<TB><<<grid_for(n), 256, 0, stream()>>>(static_cast<const TB*>(bias), bias_f32.as<float>(), n);
      });
      check_launch("linear/bias_to_f32");
      b = bias_f32.as<float>();
    }
    const GemmSm90Args g{xa, w, b, residual, out, m, n, k};
    const bool small = kind == plans::GemmKind::Sm90SmallM;
    const int rc = wt == DType::BF16 ? (small ? gemm_bf16_sm90_small_m(g) : gemm_bf16_sm90_large(g))
                                     : (small ? gemm_f16_sm90_small_m(g) : gemm_f16_sm90_large(g));
    if (rc != 0) throw std::runtime_error(gemm_last_error());
    check_launch("linear/gemm");
    return;
  }
  by_act_dtype(x_dtype, [&](auto zx) {
    by_dtype(wt, [&](auto zw) {
      by_dtype(bt, [&](auto zb) {
        using TX = decltype(zx);
        using TW = decltype(zw);
        using TB = decltype(zb);
        const int64_t threads = m * n * 32;
        simt_linear_kernel<TX, TW, TB><<<unsigned((threads + 255) / 256), 256, 0, stream()>>>(
            static_cast<const TX*>(x), static_cast<const TW*>(w), static_cast<const TB*>(bias), residual, out, m, n,
            k);
      });
    });
  });
  check_launch("linear/simt");
}

}  // namespace fastdllm::cuda
