// W4A16 on Hopper's tensor cores: out[M, N] (fp32) = x[M, K] (bf16) @ dequant(w)^T
// (+ bias[N]) (+ residual[M, N]), with w int4 codes [N, K] (two per byte, even
// input in the low nibble: the CUDA int layout, cuda/gemm/int_layout.h) and, per
// (row, group of `group` inputs), a bf16 scale s and zero term -s*z, so that
//   dequant(w)[n, k] = s * q + (-s * z) = s * (q - z),
// computed in bf16 by CUTLASS's sm90 mixed-input mainloop (the codes are
// converted in registers and fed to wgmma as its A operand). As the bf16
// small-M GEMM the problem is swapped: GEMM-M = the weight rows, GEMM-N = the
// tokens (a 64-wide tile), out^T column-major = out row-major, the bias per
// GEMM-M row, the residual as C. One configuration, used for every row count.
// Limits: K % 64 == 0, group % 64 == 0 (the K tile), N % 4 == 0; no act-order
// permutation (those weights take the SIMT kernel, linear_int.cu).
// NEVER RUN: compiled only (no GPU was lent while it was written); the checks
// are ready in tests/test_cuda.py.
#include "cuda/gemm/gemm_sm90_kernel.cuh"

namespace fastdllm::cuda {

namespace {

using cute::_1;
using Quant = cutlass::uint4b_t;
using Bf16 = cutlass::bfloat16_t;
constexpr int kTileK = 64;  // 128 bytes of bf16 activations per row
using TileShape = cute::Shape<cute::_128, cute::_64, cute::Int<kTileK>>;
using ClusterShape = cute::Shape<_1, _1, _1>;
using LayoutCD = cutlass::layout::ColumnMajor;
constexpr int kAlignQ = 128 / 4;  // int4 codes per 16 bytes
constexpr int kAlignX = 8;
constexpr int kAlignCD = 4;

using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, float, LayoutCD, kAlignCD, float, LayoutCD, kAlignCD,
    cutlass::epilogue::TmaWarpSpecializedCooperative,
    cutlass::epilogue::fusion::LinCombPerRowBias<float, float, float, float, float>>::CollectiveOp;

// (codes, scale, zero) name the scale-and-zero-point mode of the mixed-input mainloop.
using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cute::tuple<Quant, Bf16, Bf16>, cutlass::layout::RowMajor,
    kAlignQ, Bf16, cutlass::layout::ColumnMajor, kAlignX, float, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
        sizeof(typename CollectiveEpilogue::SharedStorage))>,
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;

using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                    CollectiveEpilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

}  // namespace

int gemm_w4a16_sm90(const GemmW4A16Sm90Args& a) {
  const char* name = "gemm_w4a16_sm90: needs K and the group size multiples of 64 and N % 4 == 0, or CUTLASS "
                     "cannot implement or launch this problem";
  if (a.k % kTileK || a.group % kTileK || a.n % kAlignCD) {
    set_gemm_error(name);
    return 1;
  }
  const int gm = int(a.n), gn = int(a.m), gk = int(a.k), scale_k = int(a.k / a.group);
  auto stride_a = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, {gm, gk, 1});
  auto stride_b = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, {gn, gk, 1});
  auto stride_cd = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, {gm, gn, 1});
  auto stride_s = cutlass::make_cute_packed_stride(typename CollectiveMainloop::StrideScale{}, {gm, scale_k, 1});
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {gm, gn, gk, 1},
      {static_cast<const Quant*>(a.w), stride_a, static_cast<const Bf16*>(a.x), stride_b,
       static_cast<const Bf16*>(a.scale), stride_s, int(a.group), static_cast<const Bf16*>(a.zero)},
      // C = the residual (beta = 1) or, never read with beta = 0, out itself.
      {{}, a.residual ? a.residual : a.out, stride_cd, a.out, stride_cd}};
  args.epilogue.thread.alpha = 1.0f;
  args.epilogue.thread.beta = a.residual ? 1.0f : 0.0f;
  args.epilogue.thread.bias_ptr = a.bias;
  return launch_gemm<Gemm>(args, name);
}

}  // namespace fastdllm::cuda
