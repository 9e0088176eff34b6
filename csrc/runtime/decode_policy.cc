#include "runtime/decode_policy.h"

#include <cmath>

#include "fastdllm/error.h"

namespace fastdllm {

int first_most_confident(const MaskedPosition* m, int n) {
  float top = m[0].confidence;
  for (int k = 1; k < n; ++k) top = m[k].confidence > top ? m[k].confidence : top;
  int best = 0;
  while (m[best].confidence < top * (1.0f - ThresholdPolicy::kTieRel)) ++best;
  return best;
}

ThresholdPolicy::ThresholdPolicy(float threshold) : threshold_(threshold) {
  FDL_CHECK(threshold >= 0.f && threshold <= 1.f, "threshold must be in [0, 1], got ", threshold);
}

void ThresholdPolicy::select(const MaskedPosition* m, int n, uint8_t* unmask) const {
  const int best = first_most_confident(m, n);
  for (int k = 0; k < n; ++k) unmask[k] = m[k].confidence > threshold_ || k == best;
}

std::unique_ptr<DecodePolicy> make_decode_policy(const PolicyParams& p) {
  if (p.name == "threshold") return std::make_unique<ThresholdPolicy>(p.threshold);
  throw InvalidArgument("decode policy '" + p.name + "' is not known; known: threshold");
}

}  // namespace fastdllm
