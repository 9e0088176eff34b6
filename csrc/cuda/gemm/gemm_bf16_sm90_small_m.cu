// out[M, N] (fp32) = x[M, K] @ w[N, K]^T (+ bias[N]) (+ residual[M, N]) for
// M <= kSmallM token rows (decoding: a block, a sub-block, one token). See
// gemm_sm90.h.
//
// Swapped operands: the GEMM computes out^T[N, M] = w[N, K] @ x[M, K]^T, so
// GEMM-M is the weight rows (thousands: fills the 128-wide wgmma M mode) and
// GEMM-N the tokens (a 64-wide tile; rows past M are TMA-masked). A = w
// row-major, B = x (both K-major); out^T column-major is out row-major, so the
// residual (C) and out (D) need no transpose; the bias becomes a per-row
// (GEMM-M) bias. The stream-K tile scheduler (heuristic decomposition,
// deterministic reduction) splits the K loop of the few output tiles over all
// SMs (a 1536-wide projection has 12 tiles for 132 SMs), which is what lets a
// batch-1 forward read weights at HBM speed.
#include "cuda/gemm/gemm_sm90.h"
#include "cuda/gemm/gemm_sm90_kernel.cuh"

namespace fastdllm::cuda {

using SmallMGemm = Sm90Gemm<cute::Shape<cute::_128, cute::_64, cute::_64>, cutlass::layout::ColumnMajor,
                            cutlass::epilogue::fusion::LinCombPerRowBias<float, float, float, float, float>,
                            cutlass::gemm::StreamKScheduler>;
static_assert(kSmallM <= 64, "one GEMM-N tile covers every token row");

int gemm_bf16_sm90_small_m(const GemmSm90Args& a) {
  if (a.m > kSmallM) {
    set_gemm_error("gemm_bf16_sm90_small_m: more token rows than one tile holds");
    return 1;
  }
  // GEMM problem (M, N, K) = (weight rows, tokens, K).
  return SmallMGemm::run(a.w, a.x, a.bias, a.residual, a.out, int(a.n), int(a.m), int(a.k),
                         "gemm_bf16_sm90_small_m: needs K % 8 == 0 and N % 4 == 0, or CUTLASS cannot implement or "
                         "launch this problem");
}

}  // namespace fastdllm::cuda
