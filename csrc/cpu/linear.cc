// Picks the linear kernel for the ISA detected at run time.
#include "core/cpu_features.h"
#include "cpu/kernels.h"
#include "cpu/linear_int.h"
#include "cpu/linear_packed.h"
#include "cpu/load_row.h"

namespace fastdllm::cpu {

void linear_avx2(const float*, const void*, DType, const float*, const float*, float*, int64_t,
                 int64_t, int64_t);
void linear_avx512(const float*, const void*, DType, const float*, const float*, float*, int64_t,
                   int64_t, int64_t);

namespace {

// The GEMM kernels take fp32 activations and bias: bf16 activations are
// upcast (exact) into scratch slot 2, a non-fp32 bias (small, off the hot
// path: models keep fp32 biases) into slot 1.
struct F32Operands {
  const float* x;
  const float* bias;
};
F32Operands f32_operands(const void* x, DType x_dtype, int64_t x_elems, const void* bias, DType bias_dtype,
                         int64_t n) {
  F32Operands o{static_cast<const float*>(x), static_cast<const float*>(bias)};
  if (x_dtype != DType::F32) {
    float* tmp = scratch_floats(x_elems, 2);
    load_row_f32(x, x_dtype, 0, x_elems, tmp);
    o.x = tmp;
  }
  if (bias && bias_dtype != DType::F32) {
    float* tmp = scratch_floats(n, 1);
    load_row_f32(bias, bias_dtype, 0, n, tmp);
    o.bias = tmp;
  }
  return o;
}

}  // namespace

void linear(const void* xv, DType x_dtype, const void* w, DType wt, bool packed, const void* bias, DType bias_dtype,
            const float* residual, float* out, int64_t m, int64_t n, int64_t k) {
  const F32Operands op = f32_operands(xv, x_dtype, m * k, bias, bias_dtype, n);
  const float *x = op.x, *b = op.bias;
  if (packed) {
    const uint16_t* wp = static_cast<const uint16_t*>(w);
    const Isa i = isa();
    if (i == Isa::AMX_BF16)
      linear_packed_amx(x, wp, b, residual, out, m, n, k);
    else if (i == Isa::AVX512_BF16)
      linear_packed_avx512bf16(x, wp, b, residual, out, m, n, k);
    else
      linear_packed_avx2(x, wp, b, residual, out, m, n, k);
  } else if (has_avx512_bf16())
    linear_avx512(x, w, wt, b, residual, out, m, n, k);
  else
    linear_avx2(x, w, wt, b, residual, out, m, n, k);
}

constexpr int64_t kIntAmxMinRows = 4;

void linear_int(const void* xv, DType x_dtype, const WeightView& wv, const void* bias, DType bias_dtype,
                const float* residual, float* out, int64_t m, bool silu) {
  const int64_t n = wv.rows(), k = wv.cols();
  const F32Operands op = f32_operands(xv, x_dtype, m * k, bias, bias_dtype, n);
  const float *x = op.x, *b = op.bias;
  IntWeight w;
  w.codes = wv.values.ptr<uint8_t>();
  w.scales = wv.scales.ptr<float>();
  w.zero_scales = wv.zero_scales.ptr<float>();
  w.perm = wv.perm.defined() ? wv.perm.ptr<int32_t>() : nullptr;
  w.bits = format_traits(wv.format).bits;
  w.group = wv.group_size;
  // AMX from a few rows up (one row: the weight stream dominates and the
  // register kernel's decode is cheaper than a tile's); groups of 32 k at least.
  const Isa i = isa();
  if (i == Isa::AMX_BF16 && m >= kIntAmxMinRows && w.group % 32 == 0)
    linear_int_amx(x, w, b, residual, out, m, n, k, silu);
  else if (i >= Isa::AVX512_BF16)
    linear_int_avx512bf16(x, w, b, residual, out, m, n, k, silu);
  else
    linear_int_avx2(x, w, b, residual, out, m, n, k, silu);
}

void linear_silu_mul(const float* x, const uint16_t* w, float* out, int64_t m, int64_t inter, int64_t k) {
  const Isa i = isa();
  if (i == Isa::AMX_BF16)
    linear_silu_mul_packed_amx(x, w, out, m, inter, k);
  else if (i == Isa::AVX512_BF16)
    linear_silu_mul_packed_avx512bf16(x, w, out, m, inter, k);
  else
    linear_silu_mul_packed_avx2(x, w, out, m, inter, k);
}

}  // namespace fastdllm::cpu
