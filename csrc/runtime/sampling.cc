#include "runtime/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace fastdllm {

Sampled sample_nucleus(const float* logits, int64_t vocab, float temperature, float top_p, int top_k,
                       std::mt19937_64& rng) {
  thread_local std::vector<int32_t> order;
  thread_local std::vector<double> probs;
  order.resize(size_t(vocab));
  probs.resize(size_t(vocab));
  std::iota(order.begin(), order.end(), 0);
  const float mx = *std::max_element(logits, logits + vocab);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) {
    probs[size_t(i)] = std::exp(double(logits[i] - mx) / temperature);
    sum += probs[size_t(i)];
  }
  for (double& p : probs) p /= sum;
  // Sort descending by probability, ties by index (stable and deterministic).
  auto by_prob = [&](int32_t a, int32_t b) {
    return probs[size_t(a)] > probs[size_t(b)] || (probs[size_t(a)] == probs[size_t(b)] && a < b);
  };
  int64_t keep = vocab;
  if (top_k > 0 && top_k < vocab) keep = top_k;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_prob);
  double kept_mass = 0.0;
  for (int64_t i = 0; i < keep; ++i) kept_mass += probs[size_t(order[size_t(i)])];
  // Nucleus over the (top-k renormalised) sorted list.
  int64_t n = 0;
  double cum = 0.0;
  while (n < keep) {
    cum += probs[size_t(order[size_t(n)])] / kept_mass;
    ++n;
    if (cum > double(top_p)) break;  // the first one past top_p is kept, then stop
  }
  double mass = 0.0;
  for (int64_t i = 0; i < n; ++i) mass += probs[size_t(order[size_t(i)])];
  std::uniform_real_distribution<double> uni(0.0, mass);
  const double r = uni(rng);
  double acc = 0.0;
  int64_t pick = n - 1;
  for (int64_t i = 0; i < n; ++i) {
    acc += probs[size_t(order[size_t(i)])];
    if (r < acc) {
      pick = i;
      break;
    }
  }
  const int32_t tok = order[size_t(pick)];
  return {tok, float(probs[size_t(tok)] / mass)};
}

}  // namespace fastdllm
