// Weight-only integer GEMMs on Hopper's tensor cores (W4A16, W8A16): the
// configuration shared by the code types' translation units
// (gemm_w4a16_sm90.cu, gemm_w8a16_sm90.cu, each building its mainloop):
// out[M, N] (fp32) = x[M, K] (bf16) @ dequant(w)^T (+ bias[N]) (+ residual[M, N]),
// with w codes [N, K] (uint4 two per byte, even input in the low nibble, or
// uint8: the CUDA int layout, cuda/gemm/int_layout.h) and, per (row, group of
// `group` inputs), a bf16 scale s and zero term -s*z, so that
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
#pragma once
#include "cuda/gemm/gemm_sm90_kernel.cuh"

namespace fastdllm::cuda {

namespace mixed_input {
// The parts every code type shares.
using Bf16 = cutlass::bfloat16_t;
constexpr int kTileK = 64;  // 128 bytes of bf16 activations per row
using TileShape = cute::Shape<cute::_128, cute::_64, cute::Int<kTileK>>;
using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
using LayoutCD = cutlass::layout::ColumnMajor;
constexpr int kAlignX = 8;
constexpr int kAlignCD = 4;
using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, float, LayoutCD, kAlignCD, float, LayoutCD,
    kAlignCD, cutlass::epilogue::TmaWarpSpecializedCooperative,
    cutlass::epilogue::fusion::LinCombPerRowBias<float, float, float, float, float>>::CollectiveOp;
}  // namespace mixed_input

// Runs the GEMM a translation unit built from these parts for its code type
// (the mainloop builder is only instantiated at namespace scope: it does not
// compile as a dependent member of a class template).
template <class Gemm, class Mainloop>
int run_mixed(const GemmMixedSm90Args& a, const char* name) {
  using namespace mixed_input;
  if (a.k % kTileK || a.group % kTileK || a.n % kAlignCD) {
    set_gemm_error(name);
    return 1;
  }
  using Kernel = typename Gemm::GemmKernel;
  // GEMM problem (M, N, K) = (weight rows, tokens, K).
  const int gm = int(a.n), gn = int(a.m), gk = int(a.k), scale_k = int(a.k / a.group);
  auto stride_a = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, {gm, gk, 1});
  auto stride_b = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, {gn, gk, 1});
  auto stride_cd = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, {gm, gn, 1});
  auto stride_s = cutlass::make_cute_packed_stride(typename Mainloop::StrideScale{}, {gm, scale_k, 1});
  using Quant = typename Mainloop::ElementA;
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
