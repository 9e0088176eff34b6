// W8A8 fp8 GEMM for M <= kSmallM token rows (decoding) on sm_90a:
//   out[M, N] = (xq[M, K] @ wq[N, K]^T) * x_scale[M] * w_scale[N] + bias[N] + C[M, N]
// with E4M3 operands (both K-major, what fp8 wgmma reads), fp32 accumulation
// and an epilogue visitor tree for the two scale vectors. As the bf16 small-M
// GEMM (gemm_sm90_kernel.cuh), the operands are swapped so that the weight rows
// fill the 128-wide GEMM-M mode and the few tokens the 64-wide GEMM-N tile, with
// the stream-K scheduler spreading the K loop of the few output tiles over all
// SMs. In the swapped problem the weight scale and the bias are per GEMM-M row
// (column broadcasts) and the token scale is per GEMM-N column (a row broadcast);
// out^T column-major is out row-major. C is always read (the caller passes the
// residual or zeros). Limits: K % 16 == 0 (16-byte TMA rows of fp8), N % 4 == 0.
// NEVER RUN: compiled only (no GPU was lent while it was written); the checks
// are ready in tests/test_cuda.py.
#include "cuda/gemm/gemm_sm90_kernel.cuh"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"

namespace fastdllm::cuda {

namespace {

namespace fusion = cutlass::epilogue::fusion;
using cute::_0;
using cute::_1;
using cute::Int;

using Fp8 = cutlass::float_e4m3_t;
using TileShape = cute::Shape<cute::_128, cute::_64, cute::_128>;  // K tile 128: 128 bytes of fp8 per row
using ClusterShape = cute::Shape<_1, _1, _1>;
using LayoutCD = cutlass::layout::ColumnMajor;  // out^T column-major = out row-major
constexpr int kAlignAB = 16;                    // fp8 elements per 16-byte TMA row
constexpr int kAlignCD = 4;
constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// Per GEMM-M row (weight row) and per GEMM-N column (token) vectors.
using PerRow = fusion::Sm90ColBroadcast<0, TileShape, float, float, cute::Stride<_1, _0, int64_t>>;
using PerCol = fusion::Sm90RowBroadcast<0, TileShape, float, float, cute::Stride<_0, _1, int64_t>>;
template <template <class> class Fn>
using Op = fusion::Sm90Compute<Fn, float, float, kRound>;

using WScaled = fusion::Sm90EVT<Op<cutlass::multiplies>, PerRow, fusion::Sm90AccFetch>;  // w_scale * acc
using XScaled = fusion::Sm90EVT<Op<cutlass::multiplies>, PerCol, WScaled>;               // * x_scale
using Biased = fusion::Sm90EVT<Op<cutlass::plus>, XScaled, PerRow>;                       // + bias
using Epilogue = fusion::Sm90EVT<Op<cutlass::plus>, Biased, fusion::Sm90SrcFetch<float>>;  // + C

using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, float, LayoutCD, kAlignCD, float, LayoutCD, kAlignCD,
    cutlass::epilogue::TmaWarpSpecializedCooperative, Epilogue>::CollectiveOp;

using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Fp8, cutlass::layout::RowMajor, kAlignAB, Fp8,
    cutlass::layout::ColumnMajor, kAlignAB, float, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
        sizeof(typename CollectiveEpilogue::SharedStorage))>,
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;

using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                    CollectiveEpilogue, cutlass::gemm::StreamKScheduler>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

}  // namespace

int gemm_fp8_sm90_small_m(const GemmFp8Sm90Args& a) {
  const char* name = "gemm_fp8_sm90_small_m: needs M <= kSmallM, K % 16 == 0 and N % 4 == 0, or CUTLASS cannot "
                     "implement or launch this problem";
  if (a.m > kSmallM || a.k % kAlignAB || a.n % kAlignCD) {
    set_gemm_error(name);
    return 1;
  }
  // GEMM problem (M, N, K) = (weight rows, tokens, K).
  const int gm = int(a.n), gn = int(a.m), gk = int(a.k);
  auto stride_a = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, {gm, gk, 1});
  auto stride_b = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, {gn, gk, 1});
  auto stride_cd = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, {gm, gn, 1});
  typename Gemm::Arguments args{
      cutlass::gemm::GemmUniversalMode::kGemm,
      {gm, gn, gk, 1},
      {static_cast<const Fp8*>(a.w), stride_a, static_cast<const Fp8*>(a.x), stride_b},
      {{}, a.c, stride_cd, a.out, stride_cd}};
  // The tree's arguments, children first: ((((w_scale, acc), x_scale), bias), C).
  args.epilogue.thread = {
      {                                        // Biased
       {                                       // XScaled
        {a.x_scale, 0.f, {}},                  // PerCol: x_scale
        {{a.w_scale, 0.f, {}}, {}, {}},        // WScaled: PerRow w_scale, acc, multiplies
        {}},                                   // multiplies
       {a.bias, 0.f, {}},                      // PerRow: bias (null: 0)
       {}},                                    // plus
      {},                                      // C
      {}};                                     // plus
  return launch_gemm<Gemm>(args, name);
}

}  // namespace fastdllm::cuda
