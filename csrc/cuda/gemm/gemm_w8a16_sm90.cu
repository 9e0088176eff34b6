// W8A16 (uint8 codes x bf16 activations) on the tensor cores: the
// configuration of gemm_mixed_sm90.cuh with this code type's mainloop.
// NEVER RUN (compiled only).
#include "cuda/gemm/gemm_mixed_sm90.cuh"

namespace fastdllm::cuda {

namespace {

using namespace mixed_input;
using Quant = uint8_t;
using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cute::tuple<Quant, Bf16, Bf16>, cutlass::layout::RowMajor,
    128 / cutlass::sizeof_bits<Quant>::value, Bf16, cutlass::layout::ColumnMajor, kAlignX, float, TileShape,
    ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(CollectiveEpilogue::SharedStorage))>,
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<
    cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, CollectiveEpilogue>>;

}  // namespace

int gemm_w8a16_sm90(const GemmMixedSm90Args& a) {
  return run_mixed<Gemm, Mainloop>(a, "gemm_w8a16_sm90: needs K and the group size multiples of 64 and N % 4 == 0, or "
                                      "CUTLASS cannot implement or launch this problem");
}

}  // namespace fastdllm::cuda
