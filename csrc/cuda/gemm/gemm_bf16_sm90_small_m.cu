// out[M, N] (fp32) = x[M, K] @ w[N, K]^T (+ bias[N]) (+ residual[M, N]) for
// M <= kSmallM token rows (decoding: a block, a sub-block, one token). See
// gemm_sm90.h.
//
// Swapped operands: the GEMM computes out^T[N, M] = w[N, K] @ x[M, K]^T, so
// GEMM-M is the weight rows (thousands: fills the 128-wide wgmma M mode) and
// GEMM-N the tokens (a 64-wide tile; rows past M are TMA-masked). A = w
// row-major, B = x^T column-major (both K-major); out^T column-major is out
// row-major, so C (residual) and D (out) need no transpose; the bias becomes a
// per-row (GEMM-M) bias. The stream-K scheduler splits the K loop of the few
// output tiles over all SMs (1536 x 32 has 12 tiles for 132 SMs), which is what
// lets a batch-1 forward read weights at HBM speed.
#include "cuda/gemm/gemm_sm90.h"
#include "cuda/gemm/gemm_sm90_run.cuh"
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler.hpp"
#include "cutlass/util/packed_stride.hpp"

namespace fastdllm::cuda {

namespace {

using namespace cute;

using ElementAB = cutlass::bfloat16_t;
using ElementOut = float;
using ElementAcc = float;
constexpr int kAlignAB = 128 / cutlass::sizeof_bits<ElementAB>::value;
constexpr int kAlignOut = 128 / cutlass::sizeof_bits<ElementOut>::value;

using TileShape = Shape<_128, _64, _64>;
static_assert(kSmallM <= 64, "one GEMM-N tile covers every token row");
using ClusterShape = Shape<_1, _1, _1>;
using Fusion = cutlass::epilogue::fusion::LinCombPerRowBias<ElementOut, ElementAcc, float, ElementOut, ElementAcc>;

using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, ElementAcc, ElementOut,
    cutlass::layout::ColumnMajor, kAlignOut, ElementOut, cutlass::layout::ColumnMajor, kAlignOut,
    cutlass::epilogue::TmaWarpSpecializedCooperative, Fusion>::CollectiveOp;

using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, cutlass::layout::RowMajor, kAlignAB,
    ElementAB, cutlass::layout::ColumnMajor, kAlignAB, ElementAcc, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
        sizeof(typename CollectiveEpilogue::SharedStorage))>,
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;

using GemmKernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                        CollectiveEpilogue, cutlass::gemm::StreamKScheduler>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;

}  // namespace

int gemm_bf16_sm90_small_m(const GemmSm90Args& a) {
  if (a.k % kAlignAB || a.n % kAlignAB) {
    set_gemm_error("gemm_bf16_sm90_small_m: K and N must be multiples of 8");
    return 1;
  }
  if (a.m > kSmallM) {
    set_gemm_error("gemm_bf16_sm90_small_m: more token rows than one tile holds");
    return 1;
  }
  // GEMM problem (M, N, K) = (weight rows, tokens, K).
  const int M = int(a.n), N = int(a.m), K = int(a.k);
  auto stride_a = cutlass::make_cute_packed_stride(typename GemmKernel::StrideA{}, {M, K, 1});
  auto stride_b = cutlass::make_cute_packed_stride(typename GemmKernel::StrideB{}, {N, K, 1});
  auto stride_cd = cutlass::make_cute_packed_stride(typename GemmKernel::StrideD{}, {M, N, 1});
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {M, N, K, 1},
      {static_cast<const ElementAB*>(a.w), stride_a, static_cast<const ElementAB*>(a.x), stride_b},
      {{}, a.residual ? a.residual : a.out, stride_cd, a.out, stride_cd}};
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = a.residual ? 1.0f : 0.0f;
  args.epilogue.thread.bias_ptr = a.bias;
  args.hw_info.device_id = 0;
  args.hw_info.sm_count = sm_count();
  // Heuristic decomposition: data-parallel where there are enough tiles, stream-K otherwise.
  args.scheduler.decomposition_mode =
      cutlass::gemm::kernel::detail::PersistentTileSchedulerSm90StreamKParams::DecompositionMode::Heuristic;
  return run_gemm<Gemm>(args, "gemm_bf16_sm90_small_m: CUTLASS cannot implement or launch this problem");
}

}  // namespace fastdllm::cuda
