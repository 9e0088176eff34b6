// out[M, N] (fp32) = x[M, K] @ w[N, K]^T (+ bias[N]) (+ residual[M, N]) with
// fp16 operands for many token rows (prefill, batched blocks): the 128x128x64
// configuration of gemm_sm90_kernel.cuh.
#include "cuda/gemm/gemm_sm90_kernel.cuh"

namespace fastdllm::cuda {

int gemm_f16_sm90_large(const GemmSm90Args& a) {
  return run_large<cutlass::half_t>(a, "gemm_f16_sm90_large: needs K % 8 == 0 and N % 4 == 0, or CUTLASS cannot "
                            "implement or launch this problem");
}

}  // namespace fastdllm::cuda
