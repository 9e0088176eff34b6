// Sampling's vocabulary reduction on the CPU (ops::sampling_candidates): per row
// the maximum, the exps, bins and softmax denominator in vectorised passes, the
// histogram of core/sampling_cut.h in a scalar one, then the candidates in
// vocabulary order. Rows in parallel; per-thread buffers of V floats and shorts.
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/fast_exp.h"
#include "cpu/kernels.h"
#include "core/sampling_cut.h"

namespace fastdllm::cpu {

namespace {

float max_of(const float* l, int64_t from, int64_t to) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t i = from; i < to; ++i) mx = l[i] > mx ? l[i] : mx;
  return mx;
}

}  // namespace

void sampling_candidates(const float* logits, int64_t rows, int64_t vocab, float temperature, float top_p, int top_k,
                         int32_t exclude, float* stats, int32_t* count, int32_t* cand) {
  const float inv_t = 1.0f / temperature;
#pragma omp parallel if (rows > 1 && rows * vocab > 65536)
  {
    std::vector<float> exps(static_cast<size_t>(vocab));
    std::vector<uint16_t> bin(static_cast<size_t>(vocab));
    std::vector<int64_t> bin_count(plans::kSampleBins);
    std::vector<float> bin_mass(plans::kSampleBins);
#pragma omp for schedule(dynamic, 1)
    for (int64_t r = 0; r < rows; ++r) {
      const float* l = logits + r * vocab;
      const int64_t ex = exclude >= 0 ? exclude : vocab;  // [0, ex) and (ex, vocab) are looked at
      const float mx = std::max(max_of(l, 0, ex), ex + 1 < vocab ? max_of(l, ex + 1, vocab) : -INFINITY);
      float* ep = exps.data();
      uint16_t* bp = bin.data();
      double denom = 0.0;
#pragma omp simd reduction(+ : denom)
      for (int64_t i = 0; i < vocab; ++i) {
        const float u = (mx - l[i]) * inv_t;
        ep[i] = fast_exp(-u);
        bp[i] = uint16_t(plans::sample_bin(u));
        denom += i == ex ? 0.0 : double(ep[i]);
      }
      std::fill(bin_count.begin(), bin_count.end(), 0);
      std::fill(bin_mass.begin(), bin_mass.end(), 0.f);
      for (int64_t i = 0; i < vocab; ++i) {
        if (i == ex) continue;
        ++bin_count[bin[size_t(i)]];
        bin_mass[bin[size_t(i)]] += exps[size_t(i)];
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
        if (bin[size_t(i)] > cut_bin || i == ex) continue;
        out[2 * n] = int32_t(i);
        std::memcpy(&out[2 * n + 1], &l[i], 4);
        ++n;
      }
      stats[2 * r] = mx;
      stats[2 * r + 1] = float(denom);
      count[r] = n;
    }
  }
}

}  // namespace fastdllm::cpu
