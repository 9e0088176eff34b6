#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "fastdllm/error.h"

namespace fastdllm {

Sampled sample_candidates(const int32_t* pairs, int64_t count, float max, float denom, int64_t eligible,
                          const ops::SamplingOptions& o, std::mt19937_64& rng) {
  FDL_CHECK_RT(count > 0 && std::isfinite(max) && std::isfinite(denom) && denom > 0.f,
               "sampling: the logits row is not finite (maximum ", max, ", softmax denominator ", denom,
               "); the model's weights or inputs hold NaN or inf");
  struct Cand {
    double p;
    int32_t token;
  };
  thread_local std::vector<Cand> c;
  c.resize(size_t(count));
  for (int64_t i = 0; i < count; ++i) {
    float l;
    std::memcpy(&l, &pairs[2 * i + 1], 4);
    c[size_t(i)] = {std::exp(double(l - max) / o.temperature) / double(denom), pairs[2 * i]};
  }
  const auto first = [](const Cand& a, const Cand& b) { return a.p > b.p || (a.p == b.p && a.token < b.token); };
  const bool all = count >= eligible;
  const int64_t keep = o.top_k > 0 ? std::min<int64_t>(o.top_k, count) : count;
  FDL_CHECK_RT(o.top_k <= 0 || keep == o.top_k || all, "sampling: ", count, " candidates for top_k=", o.top_k);
  std::sort(c.begin(), c.end(), first);
  // Relative to the top-k mass; without top-k the probabilities are already normalised.
  double kept_mass = 1.0;
  if (o.top_k > 0) {
    kept_mass = 0.0;
    for (int64_t i = 0; i < keep; ++i) kept_mass += c[size_t(i)].p;
  }
  int64_t n = 0;
  double cum = 0.0;
  bool closed = false;
  while (n < keep) {
    cum += c[size_t(n)].p / kept_mass;
    ++n;
    if (cum > double(o.top_p)) {  // the first one past top_p is kept, then stop
      closed = true;
      break;
    }
  }
  FDL_CHECK_RT(closed || all || o.top_k > 0 || o.top_p >= 1.f, "sampling: the nucleus (top_p=", o.top_p,
               ") runs past the ", count, " candidates (cumulative ", cum, ")");
  double mass = 0.0;
  for (int64_t i = 0; i < n; ++i) mass += c[size_t(i)].p;
  std::uniform_real_distribution<double> uni(0.0, mass);
  const double r = uni(rng);
  double acc = 0.0;
  int64_t pick = n - 1;
  for (int64_t i = 0; i < n; ++i) {
    acc += c[size_t(i)].p;
    if (r < acc) {
      pick = i;
      break;
    }
  }
  return {c[size_t(pick)].token, float(c[size_t(pick)].p / mass)};
}

void sample_rows(const SamplingCandidates& c, int64_t row0, int64_t rows, int64_t eligible,
                 const ops::SamplingOptions& o, std::mt19937_64& rng, int32_t* token, float* prob) {
  for (int64_t k = 0; k < rows; ++k) {
    const int64_t r = row0 + k;
    const Sampled s = sample_candidates(c.row(r), c.count[size_t(r)], c.stats[size_t(2 * r)],
                                        c.stats[size_t(2 * r + 1)], eligible, o, rng);
    token[k] = s.token;
    prob[k] = s.prob;
  }
}

}  // namespace fastdllm
