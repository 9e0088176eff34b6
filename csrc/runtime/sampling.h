// Drawing a token from one row's sampling candidates (ops::sampling_candidates).
// fast_dllm_v2.md 4.6 with our top-k: softmax of logits / T, top-k (0 = off),
// then the nucleus: the shortest prefix of the probabilities sorted in
// descending order (ties by token id) whose cumulative sum, relative to the
// top-k mass, exceeds top_p, renormalised; the confidence is the renormalised
// probability of the drawn token. The candidates hold that prefix (the kernel's
// cut guarantees it), so only they are sorted. The random stream is ours
// (std::mt19937_64, one uniform per draw), not torch's.
#pragma once
#include <cstdint>
#include <random>

#include "fastdllm/model.h"
#include "fastdllm/ops.h"

namespace fastdllm {

struct Sampled {
  int32_t token;
  float prob;
};

// pairs: count (token, fp32 bits of its logit) pairs in any order; max and
// denom the row's stats; eligible the number of tokens the kernel looked at
// (the vocabulary less the excluded token), which says whether the candidates
// are the whole row. Throws RuntimeError when the row is not finite.
Sampled sample_candidates(const int32_t* pairs, int64_t count, float max, float denom, int64_t eligible,
                          const ops::SamplingOptions& options, std::mt19937_64& rng);

// One draw per row of c in [row0, row0 + rows), in order from one random stream.
void sample_rows(const SamplingCandidates& c, int64_t row0, int64_t rows, int64_t eligible,
                 const ops::SamplingOptions& options, std::mt19937_64& rng, int32_t* token, float* prob);

}  // namespace fastdllm
