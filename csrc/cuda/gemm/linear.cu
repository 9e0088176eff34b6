// linear on the GPU: out[M, N] = x[M, K] @ w[N, K]^T (+ bias) (+ residual),
// x and out fp32.
//   bf16 weights with K % 8 == 0 and N % 8 == 0: x is rounded to bf16, the
//     CUTLASS sm90 GEMM (gemm_bf16_sm90.cu) writes fp32 into scratch, then one
//     epilogue kernel adds bias and residual (residual may alias out).
//   anything else (fp32 / fp16 weights, odd sizes): a SIMT kernel, one warp per
//     output element, exact fp32 accumulation. Correctness path, not fast.
// Scratch buffers grow to the largest call and are reused (no cudaMalloc on
// the decode path once warm). Not thread-safe: one engine call at a time.
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "fastdllm/error.h"

namespace fastdllm::cuda {

namespace {

struct Scratch {
  void* p = nullptr;
  size_t size = 0;
  void* get(size_t n) {
    if (n > size) {
      if (p) cudaFree(p);
      if (cudaMalloc(&p, n) != cudaSuccess) {
        cudaGetLastError();
        p = nullptr;
        size = 0;
        throw std::runtime_error(detail::concat("linear: cudaMalloc of ", n, " bytes of scratch failed"));
      }
      size = n;
    }
    return p;
  }
};

Scratch g_x_bf16, g_d;

__global__ void to_bf16_kernel(const float* x, __nv_bfloat16* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

template <class TB>
__global__ void epilogue_kernel(const float* d, const TB* bias, const float* residual, float* out, int64_t m,
                                int64_t n) {
  const int64_t total = m * n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    float v = d[i];
    if (bias) v += to_f32(bias[i % n]);
    if (residual) v += residual[i];
    out[i] = v;
  }
}

template <class TW, class TB>
__global__ void simt_linear_kernel(const float* x, const TW* w, const TB* bias, const float* residual, float* out,
                                   int64_t m, int64_t n, int64_t k) {
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= m * n) return;
  const int64_t r = warp / n, c = warp % n;
  float s = 0.f;
  for (int64_t p = lane; p < k; p += 32) s += x[r * k + p] * to_f32(w[c * k + p]);
  s = warp_sum(s);
  if (lane == 0) {
    if (bias) s += to_f32(bias[c]);
    if (residual) s += residual[r * n + c];  // read before the write below: aliasing is fine
    out[r * n + c] = s;
  }
}

}  // namespace

void linear(const float* x, const void* w, DType wt, bool packed, const void* bias, DType bias_dtype,
            const float* residual, float* out, int64_t m, int64_t n, int64_t k) {
  FDL_CHECK(!packed, "linear: the packed weight layout is CPU-only");
  if (m == 0 || n == 0) return;
  const DType bt = bias ? bias_dtype : DType::F32;
  if (wt == DType::BF16 && k % 8 == 0 && n % 8 == 0) {
    auto* xb = static_cast<__nv_bfloat16*>(g_x_bf16.get(size_t(m * k) * 2));
    float* d = static_cast<float*>(g_d.get(size_t(m * n) * 4));
    to_bf16_kernel<<<grid_for(m * k), 256>>>(x, xb, m * k);
    check_launch("linear/to_bf16");
    if (gemm_bf16_sm90(xb, w, d, m, n, k, nullptr) != 0) throw std::runtime_error(last_error());
    by_dtype(bt, [&](auto zb) {
      using TB = decltype(zb);
      epilogue_kernel<TB><<<grid_for(m * n), 256>>>(d, static_cast<const TB*>(bias), residual, out, m, n);
    });
    check_launch("linear/epilogue");
    return;
  }
  by_dtype(wt, [&](auto zw) {
    by_dtype(bt, [&](auto zb) {
      using TW = decltype(zw);
      using TB = decltype(zb);
      const int64_t threads = m * n * 32;
      simt_linear_kernel<TW, TB><<<unsigned((threads + 255) / 256), 256>>>(
          x, static_cast<const TW*>(w), static_cast<const TB*>(bias), residual, out, m, n, k);
    });
  });
  check_launch("linear/simt");
}

}  // namespace fastdllm::cuda
