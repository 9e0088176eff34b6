// out[M, N] (fp32) = x[M, K] @ w[N, K]^T (+ bias[N]) (+ residual[M, N]) for
// many token rows (prefill, batched blocks). See gemm_sm90.h.
//
// A = x row-major, B = w as stored; out and the residual row-major. 128x128x64
// tiles, 1x1x1 cluster, builder-chosen stages, cooperative warp-specialized
// persistent kernel, per-column bias in the epilogue.
#include "cuda/gemm/gemm_sm90.h"
#include "cuda/gemm/gemm_sm90_kernel.cuh"

namespace fastdllm::cuda {

using LargeGemm = Sm90Gemm<cute::Shape<cute::_128, cute::_128, cute::_64>, cutlass::layout::RowMajor,
                           cutlass::epilogue::fusion::LinCombPerColBias<float, float, float, float, float>>;

int gemm_bf16_sm90_large(const GemmSm90Args& a) {
  return LargeGemm::run(a.x, a.w, a.bias, a.residual, a.out, int(a.m), int(a.n), int(a.k),
                        "gemm_bf16_sm90_large: needs K % 8 == 0 and N % 4 == 0, or CUTLASS cannot implement or "
                        "launch this problem");
}

}  // namespace fastdllm::cuda
