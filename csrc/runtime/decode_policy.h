// The decode-policy seam: after a denoising forward, which of the current
// sub-block's masked positions to unmask. One policy object per sequence
// (chosen by its parameters, as llama.cpp chooses samplers), so sequences with
// different rules share forwards. The policy sees statistics of the forward's
// masked positions only; the forward and the kernels know no decode rule.
//
// Fast-dLLM v2's confidence threshold (fast_dllm_v2.md 4, facts 4-5) is the
// default; the entropy threshold (dParallel's rule), a top-1 minus top-2
// margin threshold and Fast-dLLM v1's factor rule plug in beside it, each
// always unmasking the best position, each from the statistics the fused
// lm_head reduction returns (no softmax tensor).
#pragma once
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

namespace fastdllm {

// One masked position of the sub-block after a forward.
struct MaskedPosition {
  int32_t position = 0;    // block-relative
  int32_t token = 0;       // the token it would take: the greedy choice (never the mask token) or the sampled one
  float confidence = 0.f;  // that token's probability (sampled: renormalised over the nucleus)
  int32_t top1 = -1, top2 = -1;  // the forward's two most likely tokens (greedy forwards; -1 when sampling)
  float p1 = 0.f, p2 = 0.f;      // their softmax probabilities
  float entropy = std::numeric_limits<float>::quiet_NaN();  // nats (greedy forwards)
};

class DecodePolicy {
 public:
  virtual ~DecodePolicy() = default;
  virtual std::string name() const = 0;
  // Whether the policy reads the greedy forward's statistics (top-2, entropy),
  // which a sampled forward does not produce.
  virtual bool needs_full_statistics() const { return false; }
  // Sets unmask[k] = 1 for the positions to fill (n >= 1 masked positions,
  // in block order). Every call must unmask at least one, so that each forward
  // makes progress.
  virtual void select(const MaskedPosition* masked, int n, uint8_t* unmask) const = 0;
};

// Fast-dLLM v2: every position with confidence strictly above the threshold,
// and always the most confident one (ties within kTieRel going to the first:
// deviation 2 in docs/decoding.md).
class ThresholdPolicy final : public DecodePolicy {
 public:
  static constexpr float kTieRel = 1e-5f;
  explicit ThresholdPolicy(float threshold);
  std::string name() const override { return "threshold"; }
  void select(const MaskedPosition* masked, int n, uint8_t* unmask) const override;
  float threshold() const { return threshold_; }

 private:
  float threshold_;
};

// The index of the first of n confidences within kTieRel of the largest.
int first_most_confident(const MaskedPosition* masked, int n);

// dParallel's rule on Fast-dLLM v2: entropy strictly below the threshold (nats).
class EntropyThresholdPolicy final : public DecodePolicy {
 public:
  explicit EntropyThresholdPolicy(double threshold);
  std::string name() const override { return "entropy_threshold"; }
  bool needs_full_statistics() const override { return true; }
  void select(const MaskedPosition* masked, int n, uint8_t* unmask) const override;

 private:
  double threshold_;
};

// Top-1 minus top-2 probability strictly above the threshold.
class MarginThresholdPolicy final : public DecodePolicy {
 public:
  explicit MarginThresholdPolicy(double threshold);
  std::string name() const override { return "margin_threshold"; }
  bool needs_full_statistics() const override { return true; }
  void select(const MaskedPosition* masked, int n, uint8_t* unmask) const override;

 private:
  double threshold_;
};

// Fast-dLLM v1's factor rule (full_attention_dllms.md 3.2) on the confidences.
class FactorPolicy final : public DecodePolicy {
 public:
  explicit FactorPolicy(double factor);
  std::string name() const override { return "factor"; }
  void select(const MaskedPosition* masked, int n, uint8_t* unmask) const override;

 private:
  double factor_;
};

struct PolicyParams {
  std::string name = "threshold";
  float threshold = 0.9f;  // fp32, as upstream compares its fp32 / bf16 confidences
  double entropy_threshold = 0.5;
  double margin_threshold = 0.5;
  double factor = 1.0;
};
// Throws InvalidArgument naming the policy or its parameter.
std::unique_ptr<DecodePolicy> make_decode_policy(const PolicyParams& params);

}  // namespace fastdllm
