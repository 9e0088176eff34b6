// The commit rules of the diffusion samplers as pure functions over one
// forward's candidates (scores in candidate order, unmask flags out). The v2
// decode policies (runtime/decode_policy.h) and the full-attention samplers
// (runtime/full_attention_sequence.h) share them; full_attention_dllms.md
// sections 3-4 define each. Orderings break exact ties by candidate order
// (lower position first), which is what the official torch.sort / topk calls
// do on these sizes in practice; the contract leaves such ties unspecified.
// Scores are doubles: the float64 rules of the LLaDA family compare float64
// confidences, the fp32 rules of Dream pass fp32 values (exact in a double) and
// a threshold rounded to fp32 first, as torch compares a tensor to a scalar.
#pragma once
#include <cstdint>
#include <vector>

namespace fastdllm::rules {

// The best always, every other candidate whose confidence passes: conf >= t
// when inclusive (Fast-dLLM v1, AdaBlock, Dream), conf > t otherwise.
void threshold(const double* conf, int n, double t, bool inclusive, uint8_t* unmask);
// dParallel: the lowest entropy always, every other with H <= t (LLaDA) or H < t (Dream).
void entropy_threshold(const double* entropy, int n, double t, bool inclusive, uint8_t* unmask);
// Fast-dLLM v1's factor rule (get_transfer_index_dynamic), with its
// last-candidate quirk (section 3.2).
void factor(const double* conf, int n, double factor, uint8_t* unmask);
// The k highest scores (k clamped to [0, n]).
void top_k(const double* score, int n, int64_t k, uint8_t* unmask);
// The first position of the highest score (exact ties: the first).
int best(const double* score, int n);

// LLaDA's get_num_transfer_tokens: masks spread over steps, the remainder first.
int64_t llada_step_count(int64_t masks, int64_t steps, int64_t step);
// Entry i of torch.linspace(1, eps, steps + 1) in fp32, as ATen computes it
// (on demand: steps can be large).
float dream_timestep(int64_t steps, int64_t i, float eps = 1e-3f);
// Dream's k = int(n * (1 - s / t)) in fp32 (the last step: int(n)).
int64_t dream_step_count(int64_t masks, float s, float t, bool last);

}  // namespace fastdllm::rules
