// out[M, N] (fp32) = x[M, K] @ w[N, K]^T (+ bias[N]) (+ residual[M, N]) with
// fp16 operands for M <= kSmallM token rows (decoding: a block, a sub-block, one
// token): the swapped, stream-K configuration of gemm_sm90_kernel.cuh.
#include "cuda/gemm/gemm_sm90_kernel.cuh"

namespace fastdllm::cuda {

int gemm_f16_sm90_small_m(const GemmSm90Args& a) {
  return run_small_m<cutlass::half_t>(a, "gemm_f16_sm90_small_m: needs K % 8 == 0 and N % 4 == 0, or CUTLASS cannot "
                              "implement or launch this problem");
}

}  // namespace fastdllm::cuda
