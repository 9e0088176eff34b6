// ops::denoise_decide on the CPU: the rule of ops/denoise_rule.h, in place on a
// host copy of the denoise state. The CPU has no launch gap to hide; this is the
// device-decision path that CI runs token-exact against the host loop.
#include <vector>

#include "cpu/kernels.h"
#include "ops/denoise_rule.h"

namespace fastdllm::cpu {

void denoise_decide(int32_t* state, const int32_t* index, const float* prob, int32_t* staging, int32_t ran, int sub) {
  std::vector<int32_t> pos(static_cast<size_t>(sub)), tok(static_cast<size_t>(sub));
  std::vector<float> conf(static_cast<size_t>(sub));
  const int32_t go = denoise::decide(state, index, prob, ran, pos.data(), tok.data(), conf.data());
  if (go != denoise::kNone) denoise::write_step_inputs(state, go, staging);
}

}  // namespace fastdllm::cpu
