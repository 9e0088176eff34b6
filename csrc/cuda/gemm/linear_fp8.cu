// W8A8 fp8 linear on the GPU (ops::linear with WeightFormat::Fp8): the
// activations are quantized to E4M3 per token (dynamic scale max|x_row| / 448,
// the largest finite E4M3; saturating round-to-nearest), then the CUTLASS fp8
// GEMM (gemm_fp8_sm90_small_m.cu) multiplies on the fp8 tensor cores and
// applies both scales, the bias and the residual in its epilogue.
// Rows run in chunks of kSmallM (a prefill's chunks each stream the weights
// again: correct, not fast). NEVER RUN (no GPU was lent); tests/test_cuda.py
// has the checks ready.
#include <cuda_fp8.h>

#include <algorithm>
#include <stdexcept>

#include "core/caching_allocator.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "cuda/gemm/gemm_sm90.h"
#include "fastdllm/error.h"

namespace fastdllm::cuda {

namespace {

constexpr float kE4M3Max = 448.f;

template <class TX>
__global__ void quantize_rows_e4m3(const TX* __restrict__ x, int64_t k, __nv_fp8_e4m3* __restrict__ xq,
                                   float* __restrict__ scale) {
  __shared__ float s_max[32];
  const TX* row = x + int64_t(blockIdx.x) * k;
  float amax = 0.f;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) amax = fmaxf(amax, fabsf(to_f32(row[i])));
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s_max[warp] = amax;
  __syncthreads();
  if (warp == 0) {
    amax = lane < int(blockDim.x >> 5) ? s_max[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (lane == 0) s_max[0] = amax;
  }
  __syncthreads();
  // An all-zero row keeps scale 1 (its codes are zeros either way).
  const float s = s_max[0] > 0.f ? s_max[0] / kE4M3Max : 1.f;
  if (threadIdx.x == 0) scale[blockIdx.x] = s;
  __nv_fp8_e4m3* qrow = xq + int64_t(blockIdx.x) * k;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) qrow[i] = __nv_fp8_e4m3(to_f32(row[i]) / s);
}

}  // namespace

void linear_fp8(const void* x, DType x_dtype, const Fp8GemmArgs& a) {
  FDL_CHECK(a.k % 16 == 0 && a.n % 4 == 0, "linear (fp8 weights) on cuda: in_features (", a.k,
            ") must be a multiple of 16 and out_features (", a.n, ") of 4");
  if (a.m == 0 || a.n == 0) return;
  DeviceScratch xq(device_allocator(), size_t(a.m * a.k));
  DeviceScratch sx(device_allocator(), size_t(a.m) * sizeof(float));
  by_act_dtype(x_dtype, [&](auto zx) {
    using TX = decltype(zx);
    quantize_rows_e4m3<TX><<<unsigned(a.m), 256, 0, stream()>>>(static_cast<const TX*>(x), a.k,
                                                                 xq.as<__nv_fp8_e4m3>(), sx.as<float>());
  });
  check_launch("linear/fp8_quantize");
  // C is always read by the GEMM's epilogue: the residual, or out zeroed.
  const float* c = a.residual;
  if (!c) {
    FDL_CHECK(cudaMemsetAsync(a.out, 0, size_t(a.m * a.n) * sizeof(float), stream()) == cudaSuccess,
              "linear (fp8 weights) on cuda: cudaMemsetAsync failed");
    c = a.out;
  }
  for (int64_t r0 = 0; r0 < a.m; r0 += kSmallM) {
    GemmFp8Sm90Args g;
    g.m = std::min<int64_t>(kSmallM, a.m - r0);
    g.n = a.n;
    g.k = a.k;
    g.x = xq.as<uint8_t>() + r0 * a.k;
    g.w = a.w;
    g.x_scale = sx.as<float>() + r0;
    g.w_scale = a.w_scales;
    g.bias = a.bias;
    g.c = c + r0 * a.n;
    g.out = a.out + r0 * a.n;
    if (gemm_fp8_sm90_small_m(g) != 0) throw std::runtime_error(gemm_last_error());
  }
}

}  // namespace fastdllm::cuda
