#include "runtime/transfer_rules.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace fastdllm::rules {

namespace {

// Candidate indices by score, best first (descending, or ascending for
// entropies); equal scores keep candidate order.
std::vector<int> ranked(const double* score, int n, bool descending) {
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return descending ? score[a] > score[b] : score[a] < score[b];
  });
  return order;
}

}  // namespace

int best(const double* score, int n) {
  int b = 0;
  for (int k = 1; k < n; ++k)
    if (score[k] > score[b]) b = k;
  return b;
}

void threshold(const double* conf, int n, double t, bool inclusive, uint8_t* unmask) {
  if (n <= 0) return;
  const int b = best(conf, n);
  for (int k = 0; k < n; ++k) unmask[k] = k == b || (inclusive ? conf[k] >= t : conf[k] > t);
}

void entropy_threshold(const double* entropy, int n, double t, bool inclusive, uint8_t* unmask) {
  if (n <= 0) return;
  int b = 0;
  for (int k = 1; k < n; ++k)
    if (entropy[k] < entropy[b]) b = k;
  for (int k = 0; k < n; ++k) unmask[k] = k == b || (inclusive ? entropy[k] <= t : entropy[k] < t);
}

void factor(const double* conf, int n, double f, uint8_t* unmask) {
  if (n <= 0) return;
  const std::vector<int> order = ranked(conf, n, true);
  // The first rank (1-based) whose confidence falls below 1 - f / (rank + 1)
  // (rank 1 never fails); commit the ranks before it, or all of them when no
  // rank fails or only the last does.
  int take = n;
  for (int r = 2; r <= n; ++r)
    if (conf[order[size_t(r - 1)]] < 1.0 - f / double(r + 1)) {
      take = r == n ? n : r - 1;
      break;
    }
  std::fill(unmask, unmask + n, uint8_t(0));
  for (int r = 0; r < take; ++r) unmask[order[size_t(r)]] = 1;
}

void top_k(const double* score, int n, int64_t k, uint8_t* unmask) {
  std::fill(unmask, unmask + n, uint8_t(0));
  if (n <= 0) return;
  const std::vector<int> order = ranked(score, n, true);
  const int64_t take = std::clamp<int64_t>(k, 0, n);
  for (int64_t r = 0; r < take; ++r) unmask[order[size_t(r)]] = 1;
}

int64_t llada_step_count(int64_t masks, int64_t steps, int64_t step) {
  if (step >= steps) return 0;
  return masks / steps + (step < masks % steps ? 1 : 0);
}

float dream_timestep(int64_t steps, int64_t i, float eps) {
  // ATen's linspace kernel: step = (end - start) / (n - 1) in the output dtype;
  // the first half counts up from start, the second half down from end, each
  // a fused multiply-add (what its vectorized loop compiles to; std::fma makes
  // it so whatever this compiler contracts).
  const int64_t n = steps + 1;
  if (n == 1) return 1.0f;
  const float start = 1.0f, end = eps;
  const float step = (end - start) / float(n - 1);
  return i < n / 2 ? std::fma(step, float(i), start) : std::fma(-step, float(n - i - 1), end);
}

int64_t dream_step_count(int64_t masks, float s, float t, bool last) {
  const float n = float(masks);
  if (last) return int64_t(n);
  const volatile float ratio = s / t;  // each operation rounded to fp32, as torch's tensors are
  const volatile float keep = 1.0f - ratio;
  const volatile float k = n * keep;
  return int64_t(k);
}

}  // namespace fastdllm::rules
