// The greedy vocabulary reduction on the GPU (ops::lm_head_top2): the lm_head
// GEMM writes the active rows' logits into device scratch (at most a few
// hundred rows x V fp32, which stays in L2 / costs microseconds of HBM next to
// the V x H weight read), then one block per row finds the first maximum, the
// first maximum among the other entries, the softmax denominator relative
// to the maximum and the entropy's weighted sum (fp32 exps summed in double per
// thread). Only 24 bytes per row leave the device; rows run in chunks so that
// the logits scratch stays bounded. Limits: V < 2^31.
#include <algorithm>
#include <cfloat>

#include "core/caching_allocator.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"

namespace fastdllm::cuda {

namespace {

struct Top2 {
  float v1, v2;
  int i1, i2;  // -1: none
};

// a before b in the order (value desc, index asc); -1 indices sort last.
__device__ __forceinline__ bool before(float av, int ai, float bv, int bi) {
  if (bi < 0) return ai >= 0;
  if (ai < 0) return false;
  return av > bv || (av == bv && ai < bi);
}

__device__ __forceinline__ void offer(Top2& t, float v, int i) {
  if (before(v, i, t.v1, t.i1)) {
    t.v2 = t.v1; t.i2 = t.i1;
    t.v1 = v; t.i1 = i;
  } else if (before(v, i, t.v2, t.i2)) {
    t.v2 = v; t.i2 = i;
  }
}

__device__ __forceinline__ void merge(Top2& t, const Top2& o) {
  offer(t, o.v1, o.i1);
  offer(t, o.v2, o.i2);
}

__device__ __forceinline__ Top2 shfl_xor(const Top2& t, int o) {
  Top2 r;
  r.v1 = __shfl_xor_sync(0xffffffffu, t.v1, o);
  r.v2 = __shfl_xor_sync(0xffffffffu, t.v2, o);
  r.i1 = __shfl_xor_sync(0xffffffffu, t.i1, o);
  r.i2 = __shfl_xor_sync(0xffffffffu, t.i2, o);
  return r;
}

__global__ void top2_kernel(const float* logits, int64_t vocab, int32_t* index, float* prob) {
  __shared__ Top2 s_top[32];
  __shared__ double s_sum[32], s_tsum[32];
  const float* l = logits + int64_t(blockIdx.x) * vocab;
  Top2 t{-FLT_MAX, -FLT_MAX, -1, -1};
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) offer(t, l[i], int(i));
  for (int o = 16; o > 0; o >>= 1) merge(t, shfl_xor(t, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  if (lane == 0) s_top[warp] = t;
  __syncthreads();
  if (warp == 0) {
    t = lane < nw ? s_top[lane] : Top2{-FLT_MAX, -FLT_MAX, -1, -1};
    for (int o = 16; o > 0; o >>= 1) merge(t, shfl_xor(t, o));
    if (lane == 0) s_top[0] = t;
  }
  __syncthreads();
  const Top2 best = s_top[0];
  double sum = 0.0, tsum = 0.0;  // sums of e = exp(l - max) and of e * (l - max)
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float d = l[i] - best.v1, e = expf(d);
    sum += double(e);
    tsum += double(e * d);
  }
  sum = warp_sum_d(sum);
  tsum = warp_sum_d(tsum);
  if (lane == 0) s_sum[warp] = sum, s_tsum[warp] = tsum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0, ttotal = 0.0;
    for (int w = 0; w < nw; ++w) total += s_sum[w], ttotal += s_tsum[w];
    index[2 * blockIdx.x] = best.i1;
    index[2 * blockIdx.x + 1] = best.i2;
    prob[4 * blockIdx.x] = float(1.0 / total);
    prob[4 * blockIdx.x + 1] = best.i2 >= 0 ? float(double(expf(best.v2 - best.v1)) / total) : 0.f;
    prob[4 * blockIdx.x + 2] = float(log(total) - ttotal / total);  // entropy, nats
    prob[4 * blockIdx.x + 3] = float((total - 1.0) / total);        // tail mass 1 - p1
  }
}

}  // namespace

// The logits of rows [r0, r0 + mr) into scratch, then the reduction.
template <class Logits>
void reduce_rows(int64_t m, int64_t n, int32_t* index, float* prob, const Logits& logits_of) {
  if (m == 0) return;
  FDL_CHECK(n < (int64_t(1) << 31), "lm_head_top2 on CUDA: vocabulary of ", n, " entries is too large");
  // Full-attention samplers can ask for thousands of rows: at most kRows x V
  // fp32 logits (about 150 MB for a 152k vocabulary) at a time.
  constexpr int64_t kRows = 256;
  DeviceScratch logits(device_allocator(), size_t(std::min(m, kRows) * n) * sizeof(float));
  for (int64_t r0 = 0; r0 < m; r0 += kRows) {
    const int64_t mr = std::min(kRows, m - r0);
    logits_of(r0, mr, logits.as<float>());
    top2_kernel<<<unsigned(mr), 1024, 0, stream()>>>(logits.as<float>(), n, index + 2 * r0, prob + 4 * r0);
    check_launch("lm_head_top2");
  }
}

void lm_head_top2_int(const float* x, const IntGemmArgs& w, int64_t m, int32_t* index, float* prob) {
  reduce_rows(m, w.n, index, prob, [&](int64_t r0, int64_t mr, float* out) {
    IntGemmArgs a = w;
    a.bias = nullptr;
    a.residual = nullptr;
    a.out = out;
    a.m = mr;
    linear_int(x + r0 * w.k, DType::F32, a);
  });
}

void lm_head_top2(const float* x, const void* w, DType wt, bool packed, int64_t m, int64_t n, int64_t k,
                  int32_t* index, float* prob) {
  reduce_rows(m, n, index, prob, [&](int64_t r0, int64_t mr, float* out) {
    linear(x + r0 * k, DType::F32, w, wt, packed, nullptr, DType::F32, nullptr, out, mr, n, k);
  });
}

}  // namespace fastdllm::cuda
