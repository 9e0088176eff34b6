// Where sampling's vocabulary reduction (ops::sampling_candidates) cuts a row of
// logits, written once for the CPU and the CUDA kernel.
//
// Each token goes into a bin of u = (max - logit) / T: kBinsPerUnit bins per
// unit of u, the last bin collects everything from kBins / kBinsPerUnit on
// (probabilities below e^-32 of the top one). One pass over the row fills a
// histogram of counts and exp(-u) masses; the cut is the first bin, from the
// top, after which the candidates (all tokens of bins 0..cut) are sure to hold
// what the sampler needs:
//   top_k > 0:           at least top_k tokens (the top-k set, with its mass);
//   top_k == 0, top_p < 1: more than top_p of the softmax mass, with a relative
//                        margin for the rounding of the fp32 bin sums, so that
//                        the nucleus (the sorted prefix whose mass first exceeds
//                        top_p) ends inside the candidates;
//   otherwise:           every token.
// The cut falls between bins, so tokens with equal logits are never split.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define FDL_HOST_DEVICE __host__ __device__
#else
#define FDL_HOST_DEVICE
#endif

namespace fastdllm::plans {

constexpr int kSampleBins = 2048;
constexpr float kSampleBinsPerUnit = 64.f;
constexpr float kSampleMassMargin = 1e-3f;

// The bin of a token with u = (max - logit) / T >= 0 (NaN goes last).
FDL_HOST_DEVICE inline int sample_bin(float u) {
  const float b = u * kSampleBinsPerUnit;
  return b < float(kSampleBins - 1) ? int(b) : kSampleBins - 1;  // false for NaN as well
}

// The rule, for the running totals over bins 0..b: reached() says that those
// bins hold the candidates. denom is the row's softmax denominator (sum of exp(-u)).
struct SampleCut {
  int top_k;
  float mass_goal;  // > 0: the mass the candidates must exceed; 0: no mass rule

  FDL_HOST_DEVICE SampleCut(int top_k_, float top_p, float denom) : top_k(top_k_), mass_goal(0.f) {
    if (top_k_ <= 0 && top_p < 1.f) mass_goal = top_p * denom * (1.f + kSampleMassMargin);
  }
  FDL_HOST_DEVICE bool reached(int64_t count, float mass) const {
    if (top_k > 0) return count >= top_k;
    return mass_goal > 0.f && mass > mass_goal;
  }
};

}  // namespace fastdllm::plans
