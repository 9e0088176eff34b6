// Sampling's vocabulary reduction on the GPU (ops::sampling_candidates): one
// block of 1024 threads per row of fp32 logits. Pass 1: the row maximum.
// Pass 2: the softmax denominator (per-thread double sums, reduced in a fixed
// order, so it is deterministic) and the histogram of core/sampling_cut.h in
// shared memory (fp32 mass atomics: the bin masses only choose the cut, never a
// result). Warp 0 scans the bins for the cut; pass 3 compacts the candidates
// with one shared atomic per warp. The candidates come out in no particular
// order (the host sampler sorts them with a total order), so only count * 8
// bytes per row need to leave the device instead of V * 4. Reads the row three
// times; a few hundred rows x 600 KB stay in L2 after the lm_head wrote them.
// Limits: V < 2^31.
#include <cfloat>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "fastdllm/error.h"
#include "core/sampling_cut.h"

namespace fastdllm::cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__global__ void __launch_bounds__(kThreads)
    candidates_kernel(const float* logits, int64_t vocab, float inv_t, int top_k, float top_p, int32_t exclude,
                      float* stats, int32_t* count, int32_t* cand) {
  __shared__ int s_count[plans::kSampleBins];
  __shared__ float s_mass[plans::kSampleBins];
  __shared__ float s_red[kWarps];
  __shared__ double s_sum[kWarps];
  __shared__ int s_cut, s_n;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t row = blockIdx.x;
  const float* l = logits + row * vocab;
  for (int b = threadIdx.x; b < plans::kSampleBins; b += kThreads) {
    s_count[b] = 0;
    s_mass[b] = 0.f;
  }
  if (threadIdx.x == 0) s_n = 0;

  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads)
    if (i != exclude) mx = fmaxf(mx, l[i]);
  mx = warp_max(mx);
  if (lane == 0) s_red[warp] = mx;
  __syncthreads();
  mx = warp_max(lane < kWarps ? s_red[lane] : -INFINITY);

  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    if (i == exclude) continue;
    const float u = (mx - l[i]) * inv_t;
    const float e = __expf(-u);
    const int b = plans::sample_bin(u);
    atomicAdd(&s_count[b], 1);
    atomicAdd(&s_mass[b], e);
    sum += double(e);
  }
  sum = warp_sum_d(sum);
  if (lane == 0) s_sum[warp] = sum;
  __syncthreads();
  double denom = 0.0;
  for (int w = 0; w < kWarps; ++w) denom += s_sum[w];

  if (warp == 0) {  // first bin whose running totals reach the rule, 32 bins per step
    const plans::SampleCut rule(top_k, top_p, float(denom));
    int64_t seen = 0;
    float mass = 0.f;
    int cut = plans::kSampleBins - 1;
    for (int base = 0; base < plans::kSampleBins; base += 32) {
      int64_t c = s_count[base + lane];
      float m = s_mass[base + lane];
      for (int o = 1; o < 32; o <<= 1) {  // inclusive prefix sums over the lanes
        const int64_t co = __shfl_up_sync(0xffffffffu, c, o);
        const float mo = __shfl_up_sync(0xffffffffu, m, o);
        if (lane >= o) {
          c += co;
          m += mo;
        }
      }
      const unsigned hit = __ballot_sync(0xffffffffu, rule.reached(seen + c, mass + m));
      if (hit) {
        cut = base + __ffs(hit) - 1;
        break;
      }
      seen += __shfl_sync(0xffffffffu, c, 31);
      mass += __shfl_sync(0xffffffffu, m, 31);
    }
    if (lane == 0) s_cut = cut;
  }
  __syncthreads();
  const int cut = s_cut;

  int32_t* out = cand + row * vocab * 2;
  for (int64_t base = 0; base < vocab; base += kThreads) {
    const int64_t i = base + threadIdx.x;
    const bool take = i < vocab && i != exclude && plans::sample_bin((mx - l[i]) * inv_t) <= cut;
    const unsigned ballot = __ballot_sync(0xffffffffu, take);
    int first = 0;
    if (lane == 0 && ballot) first = atomicAdd(&s_n, __popc(ballot));
    first = __shfl_sync(0xffffffffu, first, 0);
    if (take) {
      const int at = first + __popc(ballot & ((1u << lane) - 1u));
      out[2 * at] = int32_t(i);
      out[2 * at + 1] = __float_as_int(l[i]);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    stats[2 * row] = mx;
    stats[2 * row + 1] = float(denom);
    count[row] = s_n;
  }
}

}  // namespace

void sampling_candidates(const float* logits, int64_t rows, int64_t vocab, float temperature, float top_p, int top_k,
                         int32_t exclude, float* stats, int32_t* count, int32_t* cand) {
  if (rows == 0) return;
  FDL_CHECK(vocab < (int64_t(1) << 31), "sampling_candidates on CUDA: vocabulary of ", vocab, " entries is too large");
  candidates_kernel<<<unsigned(rows), kThreads, 0, stream()>>>(logits, vocab, 1.0f / temperature, top_k, top_p,
                                                               exclude, stats, count, cand);
  check_launch("sampling_candidates");
}

}  // namespace fastdllm::cuda
