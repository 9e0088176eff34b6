// AVX-512 instantiation of the linear kernel: 16 fp32 lanes, 4x4 register tile
// (16 accumulators + 4 weight registers + 1 activation register of 32 zmm).
// Compiled with AVX-512 flags; only called when cpu::isa() says the CPU has them.
#include "cpu/linear_isa.h"

namespace fastdllm::cpu {

struct VecAvx512 {
  using reg = __m512;
  static constexpr int width = 16, mr = 4, nr = 4;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg load_bf16(const uint16_t* p) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
  static reg load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static float reduce(reg v) { return _mm512_reduce_add_ps(v); }
};

void linear_avx512(const float* x, const void* w, DType wt, const float* bias,
                   const float* residual, float* out, int64_t m, int64_t n, int64_t k) {
  linear_dispatch<VecAvx512>(x, w, wt, bias, residual, out, m, n, k);
}

}  // namespace fastdllm::cpu
