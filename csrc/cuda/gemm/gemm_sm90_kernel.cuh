// The CUTLASS 3.x sm90 GEMM the configurations of gemm_sm90.h instantiate, one
// per translation unit: bf16 or fp16 A[M, K] and B (given as [N, K], both K-major,
// what wgmma reads without a transpose), fp32 accumulation, and an fp32 epilogue
// D = acc + bias + beta * C with C and D in LayoutCD. Launches on the runtime's
// stream with its workspace (stream-K partials) from the caching allocator, so
// that the launch is capturable in a CUDA graph.
#pragma once
#include <cuda_runtime.h>

#include <type_traits>

#include "core/caching_allocator.h"
#include "core/cuda_runtime.h"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler.hpp"
#include "cutlass/kernel_hardware_info.h"
#include "cutlass/util/packed_stride.hpp"
#include "cuda/gemm/gemm_sm90.h"

namespace fastdllm::cuda {

void set_gemm_error(const char* msg);

// Checks, initializes and launches a CUTLASS 3.x device GEMM on the runtime's
// stream with its workspace from the caching allocator: 0, or a code with the
// reason (name) in gemm_last_error().
template <class Gemm>
int launch_gemm(typename Gemm::Arguments& args, const char* name) {
  args.hw_info.device_id = 0;
  static const int sms = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(0);
  args.hw_info.sm_count = sms;
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess) {
    set_gemm_error(name);
    return 2;
  }
  const cudaStream_t s = static_cast<cudaStream_t>(stream_handle());
  DeviceScratch workspace(device_allocator(), Gemm::get_workspace_size(args));
  if (gemm.initialize(args, workspace.get(), s) != cutlass::Status::kSuccess ||
      gemm.run(s) != cutlass::Status::kSuccess) {
    set_gemm_error(name);
    return 3;
  }
  return 0;
}

template <class ElementAB_, class TileShape, class LayoutCD, class Fusion, class TileScheduler = void>
struct Sm90Gemm {
  using ElementAB = ElementAB_;  // cutlass::bfloat16_t or cutlass::half_t
  static constexpr int kAlignAB = 128 / cutlass::sizeof_bits<ElementAB>::value;  // 8 elements = 16-byte TMA rows
  static constexpr int kAlignCD = 128 / cutlass::sizeof_bits<float>::value;
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, float, LayoutCD, kAlignCD, float, LayoutCD,
      kAlignCD, cutlass::epilogue::TmaWarpSpecializedCooperative, Fusion>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, cutlass::layout::RowMajor, kAlignAB,
      ElementAB, cutlass::layout::ColumnMajor, kAlignAB, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                      CollectiveEpilogue, TileScheduler>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  // 0 on success; otherwise a code, with the reason in gemm_last_error().
  static int run(const void* a, const void* b, const float* bias, const float* c, float* d, int m, int n, int k,
                 const char* name) {
    if (k % kAlignAB || (std::is_same_v<LayoutCD, cutlass::layout::RowMajor> ? n : m) % kAlignCD) {
      set_gemm_error(name);
      return 1;
    }
    auto stride_a = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, {m, k, 1});
    auto stride_b = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, {n, k, 1});
    auto stride_cd = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, {m, n, 1});
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {m, n, k, 1},
        {static_cast<const ElementAB*>(a), stride_a, static_cast<const ElementAB*>(b), stride_b},
        // C = the residual (beta = 1) or, never read with beta = 0, d itself.
        {{}, c ? c : d, stride_cd, d, stride_cd}};
    args.epilogue.thread.alpha = 1.0f;
    args.epilogue.thread.beta = c ? 1.0f : 0.0f;
    args.epilogue.thread.bias_ptr = bias;  // null: no bias
    return launch_gemm<Gemm>(args, name);
  }
};

// The two shapes of configuration, each instantiated once per element type
// (gemm_{bf16,f16}_sm90_{small_m,large}.cu).
//
// Small M (decoding, M <= kSmallM): swapped operands. The GEMM computes
// out^T[N, M] = w[N, K] @ x[M, K]^T, so GEMM-M is the weight rows (thousands:
// fills the 128-wide wgmma M mode) and GEMM-N the tokens (a 64-wide tile; rows
// past M are TMA-masked). A = w row-major, B = x (both K-major); out^T
// column-major is out row-major, so the residual (C) and out (D) need no
// transpose; the bias becomes a per-row (GEMM-M) bias. The stream-K tile
// scheduler (heuristic decomposition, deterministic reduction) splits the K loop
// of the few output tiles over all SMs (a 1536-wide projection has 12 tiles for
// 132 SMs), which is what lets a batch-1 forward read weights at HBM speed.
template <class Element>
using SmallMGemm = Sm90Gemm<Element, cute::Shape<cute::_128, cute::_64, cute::_64>, cutlass::layout::ColumnMajor,
                            cutlass::epilogue::fusion::LinCombPerRowBias<float, float, float, float, float>,
                            cutlass::gemm::StreamKScheduler>;
static_assert(kSmallM <= 64, "one GEMM-N tile covers every token row");

template <class Element>
int run_small_m(const GemmSm90Args& a, const char* name) {
  if (a.m > kSmallM) {
    set_gemm_error("sm90 small-M GEMM: more token rows than one tile holds");
    return 1;
  }
  // GEMM problem (M, N, K) = (weight rows, tokens, K).
  return SmallMGemm<Element>::run(a.w, a.x, a.bias, a.residual, a.out, int(a.n), int(a.m), int(a.k), name);
}

// Large M (prefill, batched blocks): A = x row-major, B = w as stored; out and
// the residual row-major. 128x128x64 tiles, 1x1x1 cluster, builder-chosen
// stages, cooperative warp-specialized persistent kernel, per-column bias.
template <class Element>
using LargeGemm = Sm90Gemm<Element, cute::Shape<cute::_128, cute::_128, cute::_64>, cutlass::layout::RowMajor,
                           cutlass::epilogue::fusion::LinCombPerColBias<float, float, float, float, float>>;

template <class Element>
int run_large(const GemmSm90Args& a, const char* name) {
  return LargeGemm<Element>::run(a.x, a.w, a.bias, a.residual, a.out, int(a.m), int(a.n), int(a.k), name);
}

}  // namespace fastdllm::cuda
