#include "ops/kernel_table.h"

#include "cpu/kernels.h"
#include "fastdllm/error.h"
#ifdef FASTDLLM_WITH_CUDA
#include "cuda/cuda_kernels.h"
#endif

namespace fastdllm::ops {

static KernelTable make_cpu_table() {
  KernelTable t;
  t.embedding = cpu::embedding;
  t.rms_norm = cpu::rms_norm;
  t.rope = cpu::rope;
  t.linear = cpu::linear;
  t.linear_int = cpu::linear_int;
  t.silu_mul = cpu::silu_mul;
  t.add = cpu::add;
  t.kv_write = cpu::kv_write;
  t.qkv_rope_append = cpu::qkv_rope_append;
  // The CPU attention runs per query and needs no work list.
  t.attention = [](const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale,
                   const AttentionPlanView&, void* out, DType out_dtype) {
    cpu::attention(q, heads, kv, b, scale, out, out_dtype);
  };
  t.argmax_prob = cpu::argmax_prob;
  t.lm_head_top2 = cpu::lm_head_top2;
  t.lm_head_top2_int = cpu::lm_head_top2_int;
  t.sampling_candidates = cpu::sampling_candidates;
  t.gather_rows = cpu::gather_rows;
  t.linear_silu_mul = cpu::linear_silu_mul;
  return t;
}

#ifdef FASTDLLM_WITH_CUDA
// The GPU's integer GEMM takes its own argument block (cuda/cuda_kernels.h);
// fused SiLU*mul is a CPU epilogue (the model runs gate/up, then silu_mul).
static cuda::IntGemmArgs int_gemm_args(const WeightView& w, int64_t m) {
  cuda::IntGemmArgs a;
  a.codes = w.values.ptr<uint8_t>();
  a.scales = w.scales.ptr<float>();
  a.zero_scales = w.zero_scales.ptr<float>();
  a.perm = w.perm.defined() ? w.perm.ptr<int32_t>() : nullptr;
  a.aux = w.aux.defined() ? w.aux.ptr<uint16_t>() : nullptr;
  a.bits = format_traits(w.format).bits;
  a.group = w.group_size;
  a.bias = nullptr;
  a.residual = nullptr;
  a.out = nullptr;
  a.m = m;
  a.n = w.rows();
  a.k = w.cols();
  return a;
}

static void cuda_linear_int(const void* x, DType x_dtype, const WeightView& w, const void* bias, DType bias_dtype,
                            const float* residual, float* out, int64_t m, bool silu) {
  FDL_CHECK(!silu, "linear_silu_mul with integer weights is CPU-only");
  FDL_CHECK(!bias || bias_dtype == DType::F32, "linear (integer weights) on cuda: bias must be float32");
  cuda::IntGemmArgs a = int_gemm_args(w, m);
  a.bias = static_cast<const float*>(bias);
  a.residual = residual;
  a.out = out;
  cuda::linear_int(x, x_dtype, a);
}

static void cuda_lm_head_top2_int(const float* x, const WeightView& w, int64_t m, int32_t* index, float* prob) {
  cuda::lm_head_top2_int(x, int_gemm_args(w, m), m, index, prob);
}

static void cuda_linear_fp8(const void* x, DType x_dtype, const WeightView& w, const void* bias, DType bias_dtype,
                            const float* residual, float* out, int64_t m) {
  FDL_CHECK(!bias || bias_dtype == DType::F32, "linear (fp8 weights) on cuda: bias must be float32");
  cuda::Fp8GemmArgs a;
  a.w = w.values.ptr<uint8_t>();
  a.w_scales = w.scales.ptr<float>();
  a.bias = static_cast<const float*>(bias);
  a.residual = residual;
  a.out = out;
  a.m = m;
  a.n = w.rows();
  a.k = w.cols();
  cuda::linear_fp8(x, x_dtype, a);
}
#endif

static KernelTable make_cuda_table() {
  KernelTable t;
#ifdef FASTDLLM_WITH_CUDA
  t.embedding = cuda::embedding;
  t.rms_norm = cuda::rms_norm;
  t.rope = cuda::rope;
  t.linear = cuda::linear;
  t.linear_int = cuda_linear_int;
  t.linear_fp8 = cuda_linear_fp8;
  t.silu_mul = cuda::silu_mul;
  t.add = cuda::add;
  t.kv_write = cuda::kv_write;
  t.qkv_rope_append = cuda::qkv_rope_append;
  t.attention = cuda::attention;
  t.argmax_prob = cuda::argmax_prob;
  t.lm_head_top2 = cuda::lm_head_top2;
  t.lm_head_top2_int = cuda_lm_head_top2_int;
  t.sampling_candidates = cuda::sampling_candidates;
  t.gather_rows = cuda::gather_rows;
#endif
  return t;  // without the CUDA build every entry stays null: "not implemented for device cuda"
}

const KernelTable& kernels(Device device) {
  static const KernelTable cpu_table = make_cpu_table();
  static const KernelTable cuda_table = make_cuda_table();
  return device == Device::CPU ? cpu_table : cuda_table;
}

}  // namespace fastdllm::ops
