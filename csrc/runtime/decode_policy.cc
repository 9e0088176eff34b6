#include "runtime/decode_policy.h"

#include <cmath>

#include <vector>

#include "fastdllm/error.h"
#include "runtime/transfer_rules.h"

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

EntropyThresholdPolicy::EntropyThresholdPolicy(double t) : threshold_(t) {
  FDL_CHECK(t >= 0.0 && std::isfinite(t), "entropy_threshold must be a finite number >= 0 (nats), got ", t);
}

void EntropyThresholdPolicy::select(const MaskedPosition* m, int n, uint8_t* unmask) const {
  std::vector<double> h(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) h[size_t(k)] = m[k].entropy;
  rules::entropy_threshold(h.data(), n, threshold_, false, unmask);
}

MarginThresholdPolicy::MarginThresholdPolicy(double t) : threshold_(t) {
  FDL_CHECK(t >= 0.0 && t <= 1.0, "margin_threshold must be in [0, 1], got ", t);
}

void MarginThresholdPolicy::select(const MaskedPosition* m, int n, uint8_t* unmask) const {
  std::vector<double> margin(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) margin[size_t(k)] = m[k].p1 - m[k].p2;
  rules::threshold(margin.data(), n, threshold_, false, unmask);
}

FactorPolicy::FactorPolicy(double f) : factor_(f) {
  FDL_CHECK(f > 0.0 && std::isfinite(f), "factor must be a finite number > 0, got ", f);
}

void FactorPolicy::select(const MaskedPosition* m, int n, uint8_t* unmask) const {
  std::vector<double> conf(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) conf[size_t(k)] = m[k].confidence;
  rules::factor(conf.data(), n, factor_, unmask);
}

std::unique_ptr<DecodePolicy> make_decode_policy(const PolicyParams& p) {
  if (p.name == "threshold") return std::make_unique<ThresholdPolicy>(p.threshold);
  if (p.name == "entropy_threshold") return std::make_unique<EntropyThresholdPolicy>(p.entropy_threshold);
  if (p.name == "margin_threshold") return std::make_unique<MarginThresholdPolicy>(p.margin_threshold);
  if (p.name == "factor") return std::make_unique<FactorPolicy>(p.factor);
  throw InvalidArgument("sampler '" + p.name +
                        "' is not a Fast-dLLM v2 rule; known: threshold, entropy_threshold, margin_threshold, factor");
}

}  // namespace fastdllm
