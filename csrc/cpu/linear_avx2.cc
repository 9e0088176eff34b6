// AVX2/FMA instantiation of the linear kernel: 8 fp32 lanes, 2x4 register tile
// (8 accumulators + 4 weight registers + 1 activation register of 16 ymm).
#include "cpu/linear_isa.h"

namespace fastdllm::cpu {

struct VecAvx2 {
  using reg = __m256;
  static constexpr int width = 8, mr = 2, nr = 4;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg load_bf16(const uint16_t* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static reg load_f16(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float reduce(reg v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

void linear_avx2(const float* x, const void* w, DType wt, const float* bias, const float* residual,
                 float* out, int64_t m, int64_t n, int64_t k) {
  linear_dispatch<VecAvx2>(x, w, wt, bias, residual, out, m, n, k);
}

}  // namespace fastdllm::cpu
