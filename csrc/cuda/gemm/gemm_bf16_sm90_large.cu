// out[M, N] (fp32) = x[M, K] @ w[N, K]^T (+ bias[N]) (+ residual[M, N]) for
// many token rows (prefill, batched blocks). See gemm_sm90.h.
//
// Layouts: A = x row-major, B = w^T column-major (w as stored: both operands
// K-major, what wgmma reads without a transpose), C = residual and D = out
// row-major fp32. Configuration: 128x128x64 tile, 1x1x1 cluster, builder-chosen
// stage count and warp-specialized schedule, per-column bias in the epilogue.
#include "cuda/gemm/gemm_sm90.h"
#include "cuda/gemm/gemm_sm90_run.cuh"
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

namespace fastdllm::cuda {

namespace {

using namespace cute;

using ElementAB = cutlass::bfloat16_t;
using ElementOut = float;  // the runtime's activations are fp32
using ElementAcc = float;
constexpr int kAlignAB = 128 / cutlass::sizeof_bits<ElementAB>::value;   // 8 bf16 = 16 bytes
constexpr int kAlignOut = 128 / cutlass::sizeof_bits<ElementOut>::value;  // 4 floats

using TileShape = Shape<_128, _128, _64>;
using ClusterShape = Shape<_1, _1, _1>;
using Fusion = cutlass::epilogue::fusion::LinCombPerColBias<ElementOut, ElementAcc, float, ElementOut, ElementAcc>;

using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, ElementAcc, ElementOut,
    cutlass::layout::RowMajor, kAlignOut, ElementOut, cutlass::layout::RowMajor, kAlignOut,
    cutlass::epilogue::TmaWarpSpecializedCooperative, Fusion>::CollectiveOp;

using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, cutlass::layout::RowMajor, kAlignAB,
    ElementAB, cutlass::layout::ColumnMajor, kAlignAB, ElementAcc, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
        sizeof(typename CollectiveEpilogue::SharedStorage))>,
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;

using GemmKernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                        CollectiveEpilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;

}  // namespace

int gemm_bf16_sm90_large(const GemmSm90Args& a) {
  if (a.k % kAlignAB || a.n % kAlignAB) {
    set_gemm_error("gemm_bf16_sm90_large: K and N must be multiples of 8");
    return 1;
  }
  const int M = int(a.m), N = int(a.n), K = int(a.k);
  auto stride_a = cutlass::make_cute_packed_stride(typename GemmKernel::StrideA{}, {M, K, 1});
  auto stride_b = cutlass::make_cute_packed_stride(typename GemmKernel::StrideB{}, {N, K, 1});
  auto stride_cd = cutlass::make_cute_packed_stride(typename GemmKernel::StrideD{}, {M, N, 1});
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {M, N, K, 1},
      {static_cast<const ElementAB*>(a.x), stride_a, static_cast<const ElementAB*>(a.w), stride_b},
      // C = residual (beta = 1) or, unread with beta = 0, out itself.
      {{}, a.residual ? a.residual : a.out, stride_cd, a.out, stride_cd}};
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = a.residual ? 1.0f : 0.0f;
  args.epilogue.thread.bias_ptr = a.bias;  // null: no bias
  args.hw_info.device_id = 0;
  args.hw_info.sm_count = sm_count();
  return run_gemm<Gemm>(args, "gemm_bf16_sm90_large: CUTLASS cannot implement or launch this problem");
}

}  // namespace fastdllm::cuda
