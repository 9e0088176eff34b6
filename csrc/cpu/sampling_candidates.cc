// Sampling's vocabulary reduction on the CPU (ops::sampling_candidates): per row
// the maximum, one pass for the softmax denominator and the histogram of
// ops/sampling_cut.h, then the candidates in vocabulary order. Rows in parallel.
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/fast_exp.h"
#include "cpu/kernels.h"
#include "ops/sampling_cut.h"

namespace fastdllm::cpu {

void sampling_candidates(const float* logits, int64_t rows, int64_t vocab, float temperature, float top_p, int top_k,
                         int32_t exclude, float* stats, int32_t* count, int32_t* cand) {
  const float inv_t = 1.0f / temperature;
#pragma omp parallel for schedule(dynamic, 1) if (rows > 1 && rows * vocab > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* l = logits + r * vocab;
    float mx = -INFINITY;
    for (int64_t i = 0; i < vocab; ++i)
      if (i != exclude && l[i] > mx) mx = l[i];
    std::vector<int64_t> bin_count(plans::kSampleBins, 0);
    std::vector<float> bin_mass(plans::kSampleBins, 0.f);
    double denom = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (i == exclude) continue;
      const float u = (mx - l[i]) * inv_t;
      const float e = fast_exp(-u);
      const int b = plans::sample_bin(u);
      ++bin_count[size_t(b)];
      bin_mass[size_t(b)] += e;
      denom += double(e);
    }
    const plans::SampleCut cut(top_k, top_p, float(denom));
    int cut_bin = 0;
    int64_t seen = bin_count[0];
    float mass = bin_mass[0];
    while (cut_bin < plans::kSampleBins - 1 && !cut.reached(seen, mass)) {
      ++cut_bin;
      seen += bin_count[size_t(cut_bin)];
      mass += bin_mass[size_t(cut_bin)];
    }
    int32_t* out = cand + r * vocab * 2;
    int32_t n = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (i == exclude || plans::sample_bin((mx - l[i]) * inv_t) > cut_bin) continue;
      out[2 * n] = int32_t(i);
      std::memcpy(&out[2 * n + 1], &l[i], 4);
      ++n;
    }
    stats[2 * r] = mx;
    stats[2 * r + 1] = float(denom);
    count[r] = n;
  }
}

}  // namespace fastdllm::cpu
