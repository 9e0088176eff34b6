#include "runtime/transfer_rules.h"

#include <algorithm>
#include <numeric>

namespace fastdllm::rules {

namespace {

// Candidate indices by score, best first (descending, or ascending for
// entropies); equal scores keep candidate order.
std::vector<int> ranked(const float* score, int n, bool descending) {
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return descending ? score[a] > score[b] : score[a] < score[b];
  });
  return order;
}

}  // namespace

int best(const float* score, int n) {
  int b = 0;
  for (int k = 1; k < n; ++k)
    if (score[k] > score[b]) b = k;
  return b;
}

void threshold(const float* conf, int n, float t, bool inclusive, uint8_t* unmask) {
  if (n <= 0) return;
  const int b = best(conf, n);
  for (int k = 0; k < n; ++k) unmask[k] = k == b || (inclusive ? conf[k] >= t : conf[k] > t);
}

void entropy_threshold(const float* entropy, int n, float t, bool inclusive, uint8_t* unmask) {
  if (n <= 0) return;
  int b = 0;
  for (int k = 1; k < n; ++k)
    if (entropy[k] < entropy[b]) b = k;
  for (int k = 0; k < n; ++k) unmask[k] = k == b || (inclusive ? entropy[k] <= t : entropy[k] < t);
}

void factor(const float* conf, int n, double f, uint8_t* unmask) {
  if (n <= 0) return;
  const std::vector<int> order = ranked(conf, n, true);
  // The first rank (1-based) whose confidence falls below 1 - f / (rank + 1)
  // (rank 1 never fails); commit the ranks before it, or all of them when no
  // rank fails or only the last does.
  int take = n;
  for (int r = 2; r <= n; ++r)
    if (double(conf[order[size_t(r - 1)]]) < 1.0 - f / double(r + 1)) {
      take = r == n ? n : r - 1;
      break;
    }
  std::fill(unmask, unmask + n, uint8_t(0));
  for (int r = 0; r < take; ++r) unmask[order[size_t(r)]] = 1;
}

void top_k(const float* score, int n, int64_t k, uint8_t* unmask) {
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

std::vector<float> dream_timesteps(int64_t steps, float eps) {
  // ATen's linspace kernel: step = (end - start) / (n - 1) in the output
  // dtype; the first half counts up from start, the second half down from end.
  const int64_t n = steps + 1;
  std::vector<float> t(static_cast<size_t>(n));
  if (n == 1) {
    t[0] = 1.0f;
    return t;
  }
  const float start = 1.0f, end = eps;
  const float step = (end - start) / float(n - 1);
  const int64_t half = n / 2;
  for (int64_t i = 0; i < n; ++i)
    t[size_t(i)] = i < half ? start + step * float(i) : end - step * float(n - i - 1);
  return t;
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
