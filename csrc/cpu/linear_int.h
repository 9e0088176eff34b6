// Linear on integer weight codes (cpu/int_weights.h), one entry per ISA.
// Both compute, per output and group g, s * (sum_k x_k q_k) - s z * (sum_k x_k),
// i.e. x @ dequant(W)^T with the zero point applied once per group.
//   AVX-512 BF16: activations rounded to bf16 (as the bf16 GEMMs), codes exact
//     in bf16, vdpbf16ps with fp32 accumulation.
//   AVX2: fp32 activations, codes converted to fp32, fp32 FMA.
#pragma once
#include <cstdint>

namespace fastdllm::cpu {

struct IntWeight {
  const uint8_t* codes;
  const float* scales;
  const float* zero_scales;  // s * z
  const int32_t* perm;       // input order of the codes, or null
  int bits;                  // 4 or 8
  int64_t group;             // inputs per group (even, divides K)
};

// out[M, N] = x @ W^T (+ bias) (+ residual); with silu, W is the gate/up-
// interleaved [2I, K] matrix (n = 2I) and out[M, I] = silu(gate) * up.
void linear_int_avx2(const float* x, const IntWeight& w, const float* bias, const float* residual, float* out,
                     int64_t m, int64_t n, int64_t k, bool silu);
void linear_int_avx512bf16(const float* x, const IntWeight& w, const float* bias, const float* residual, float* out,
                           int64_t m, int64_t n, int64_t k, bool silu);

// AMX BF16 (cpu/linear_int_amx.cc): codes decoded into bf16 B tiles, one group
// of k per C-tile accumulation; the same numerics as the AVX-512 BF16 kernel up
// to fp32 rounding of the accumulation order. Needs group % 32 == 0.
void linear_int_amx(const float* x, const IntWeight& w, const float* bias, const float* residual, float* out,
                    int64_t m, int64_t n, int64_t k, bool silu);

// One call as the bf16-pair kernels (AVX-512 BF16, AMX) see it: x (in the
// codes' input order) rounded to bf16 pairs xp [m_pad][k / 2] with each group's
// sum of the rounded values xs [m_pad][k / group] (the exact operand the dot
// products see; rows m..m_pad zero, in per-thread scratch), the weight and
// the epilogue's operands.
struct Bf16IntGemm {
  const uint32_t* xp;
  const float* xs;
  int64_t kp_n, groups, gp;  // input pairs, groups, pairs per group
  const IntWeight* w;
  int64_t panels;
  const float *bias, *residual;
  float* out;
  int64_t m, n;
};
// Packs the activations and fills the rest. Needs AVX-512 BF16 (defined in
// linear_int_avx512bf16.cc).
Bf16IntGemm prepare_bf16_int_gemm(const float* x, const IntWeight& w, const float* bias, const float* residual,
                                  float* out, int64_t m, int64_t n, int64_t k, int64_t m_pad);

}  // namespace fastdllm::cpu
