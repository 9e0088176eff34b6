// The decisions of a denoising forward, on the GPU that ran it
// (ops::denoise_decide, the rule in ops/denoise_rule.h), and the first node of
// a guarded graph (ops::set_graph_condition; core/cuda_runtime.h graph_capture_if).
//
// decide: one block. Thread 0 applies the rule to the block (S top-2 results,
// B tokens: a few hundred loads, ~2-4 us); then all threads write the next
// forward's step inputs (3n + rows + page-table words) into the staging buffer
// that its captured graph reads. Scratch for the rule: 12 * S bytes of
// dynamic shared memory (S <= 4096).
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "fastdllm/error.h"
#include "ops/denoise_rule.h"

namespace fastdllm::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) denoise_decide_kernel(int32_t* state, const int32_t* index,
                                                                  const float* prob, int32_t* staging, int32_t ran,
                                                                  int sub) {
  extern __shared__ int32_t scratch[];
  __shared__ int32_t go;
  if (threadIdx.x == 0)
    go = denoise::decide(state, index, prob, ran, scratch, scratch + sub, reinterpret_cast<float*>(scratch + 2 * sub));
  __syncthreads();
  if (go == denoise::kNone) return;
  const auto& h = *reinterpret_cast<const denoise::DenoiseHeader*>(state);
  const int32_t* blk = denoise::block_tokens(state);
  const int32_t* table = denoise::page_table(state);
  const int64_t len = denoise::step_inputs_len(h, go);
  for (int64_t i = threadIdx.x; i < len; i += kThreads) staging[i] = denoise::step_input(h, blk, table, go, i);
}

__global__ void set_condition_kernel(cudaGraphConditionalHandle condition, const int32_t* flag, int32_t value) {
  cudaGraphSetConditional(condition, *flag == value ? 1u : 0u);
}

}  // namespace

void denoise_decide(int32_t* state, const int32_t* index, const float* prob, int32_t* staging, int32_t ran, int sub) {
  FDL_CHECK(sub > 0 && sub <= 4096, "denoise_decide: sub-block size ", sub, " is outside [1, 4096] on CUDA");
  denoise_decide_kernel<<<1, kThreads, size_t(sub) * 12, stream()>>>(state, index, prob, staging, ran, sub);
  check_launch("denoise_decide");
}

void set_graph_condition(uint64_t condition, const int32_t* flag, int32_t value) {
  set_condition_kernel<<<1, 1, 0, stream()>>>(cudaGraphConditionalHandle(condition), flag, value);
  check_launch("set_graph_condition");
}

}  // namespace fastdllm::cuda
