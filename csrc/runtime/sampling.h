// Picking a token from one row of logits. Greedy is argmax + its softmax
// probability (ops::argmax_prob). Sampling follows fast_dllm_v2.md 4.6: softmax
// of logits / T, top-k (ours, 0 = off), then the nucleus: the smallest prefix of
// the sorted probabilities whose cumulative sum is <= top_p plus the first one
// past it, renormalised; the confidence is the renormalised probability of the
// sampled token. The random stream is ours (std::mt19937_64), not torch's.
#pragma once
#include <cstdint>
#include <random>

namespace fastdllm {

struct Sampled {
  int32_t token;
  float prob;
};

Sampled sample_nucleus(const float* logits, int64_t vocab, float temperature, float top_p, int top_k,
                       std::mt19937_64& rng);

}  // namespace fastdllm
