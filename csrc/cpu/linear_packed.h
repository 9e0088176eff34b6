// Linear on packed bf16 weights (cpu/packed_weights.h), one entry per ISA.
//   AVX-512 BF16: activations rounded to bf16 pairs, vdpbf16ps with fp32
//     accumulators (the precision PyTorch's bf16 matmul has).
//   AVX2: exact bf16 -> fp32 upcast of the weights, fp32 FMA on fp32 activations.
#pragma once
#include <cstdint>

namespace fastdllm::cpu {

void linear_packed_avx2(const float* x, const uint16_t* w, const float* bias, const float* residual,
                        float* out, int64_t m, int64_t n, int64_t k);
void linear_packed_avx512bf16(const float* x, const uint16_t* w, const float* bias, const float* residual,
                              float* out, int64_t m, int64_t n, int64_t k);

// out[M, inter] = silu(x @ gate^T) * (x @ up^T) with w the gate/up-interleaved
// packed matrix (pack_gate_up_rows; inter % 16 == 0): the MLP's first GEMM with
// SiLU*mul in its epilogue, so the [M, 2 inter] product is never written.
void linear_silu_mul_packed_avx2(const float* x, const uint16_t* w, float* out, int64_t m, int64_t inter,
                                 int64_t k);
void linear_silu_mul_packed_avx512bf16(const float* x, const uint16_t* w, float* out, int64_t m, int64_t inter,
                                       int64_t k);
// Activations rounded to bf16 pairs (nearest even) for both bf16-pair kernels:
// [m_pad][packed_pairs(k)] words in per-thread scratch, odd K padded with zero,
// rows m..m_pad zero. Needs AVX-512 BF16 (defined in linear_packed_avx512bf16.cc).
const uint32_t* pack_bf16_pairs(const float* x, int64_t m, int64_t k, int64_t m_pad);
// AMX BF16 (cpu/linear_packed_amx.cc): the same results up to fp32 rounding of the accumulation.
void linear_packed_amx(const float* x, const uint16_t* w, const float* bias, const float* residual, float* out,
                       int64_t m, int64_t n, int64_t k);
void linear_silu_mul_packed_amx(const float* x, const uint16_t* w, float* out, int64_t m, int64_t inter, int64_t k);

}  // namespace fastdllm::cpu
