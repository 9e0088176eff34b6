// D[M, N] (fp32) = A[M, K] @ W[N, K]^T, bf16 operands, fp32 accumulation, sm_90a.
//
// Layouts: A row-major (activations), W row-major [N, K] as stored in the
// checkpoint, which is B = W^T in column-major: both operands are K-major, the
// layout wgmma reads without a transpose. D row-major. Alignment: K and N must be
// multiples of 8 (16-byte TMA rows), which every Qwen2 projection satisfies.
// One configuration per translation unit (compile time and memory): a 128x128x64
// tile, a 1x1x1 cluster, builder-chosen stages and the warp-specialized schedule.
// Limits: no bias or residual epilogue yet; the small-M split-K configuration
// lives in its own TU (issue "CUDA backend for Hopper").
#include <cuda_runtime.h>

#include "cuda/cuda_kernels.h"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

namespace fastdllm::cuda {

namespace {

using namespace cute;

using ElementA = cutlass::bfloat16_t;          // activations
using LayoutA = cutlass::layout::RowMajor;
using ElementB = cutlass::bfloat16_t;          // weights, [N, K] row-major
using LayoutB = cutlass::layout::ColumnMajor;
using ElementD = float;  // the runtime's activations are fp32
using LayoutD = cutlass::layout::RowMajor;
using ElementAccumulator = float;
constexpr int kAlign = 128 / cutlass::sizeof_bits<ElementA>::value;   // 8 bf16 = 16 bytes
constexpr int kAlignD = 128 / cutlass::sizeof_bits<ElementD>::value;  // 4 floats = 16 bytes

using TileShape = Shape<_128, _128, _64>;
using ClusterShape = Shape<_1, _1, _1>;

using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, ElementAccumulator,
    ElementD, LayoutD, kAlignD, ElementD, LayoutD, kAlignD,
    cutlass::epilogue::collective::EpilogueScheduleAuto>::CollectiveOp;

using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementA, LayoutA, kAlign, ElementB,
    LayoutB, kAlign, ElementAccumulator, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
        sizeof(typename CollectiveEpilogue::SharedStorage))>,
    cutlass::gemm::collective::KernelScheduleAuto>::CollectiveOp;

using GemmKernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>,
                                                        CollectiveMainloop, CollectiveEpilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;

thread_local const char* g_last_error = "";

}  // namespace

const char* last_error() { return g_last_error; }

int gemm_bf16_sm90(const void* a, const void* w, float* d, int64_t m, int64_t n, int64_t k,
                   void* stream) {
  if (k % kAlign || n % kAlign) {
    g_last_error = "gemm_bf16_sm90: K and N must be multiples of 8";
    return 1;
  }
  const int M = int(m), N = int(n), K = int(k);
  auto stride_a = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideA{}, {M, K, 1});
  auto stride_b = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideB{}, {N, K, 1});
  auto stride_d = cutlass::make_cute_packed_stride(typename Gemm::GemmKernel::StrideD{}, {M, N, 1});
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {M, N, K, 1},
      {static_cast<const ElementA*>(a), stride_a, static_cast<const ElementB*>(w), stride_b},
      {{1.0f, 0.0f}, static_cast<const ElementD*>(d), stride_d, static_cast<ElementD*>(d), stride_d}};
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) {
    g_last_error = "gemm_bf16_sm90: CUTLASS cannot implement this problem";
    return 2;
  }
  // This configuration needs no workspace (no split-K, no stream-K reduction).
  if (gemm.initialize(args, nullptr, static_cast<cudaStream_t>(stream)) != cutlass::Status::kSuccess ||
      gemm.run(static_cast<cudaStream_t>(stream)) != cutlass::Status::kSuccess) {
    g_last_error = "gemm_bf16_sm90: CUTLASS launch failed";
    return 3;
  }
  return 0;
}

}  // namespace fastdllm::cuda
