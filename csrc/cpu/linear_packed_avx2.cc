// AVX2 kernel on packed bf16 weights: per k-pair, each 256-bit half-panel load
// gives 8 columns x 2 k's; a shift and a mask turn it into two exact fp32
// vectors, each FMA'd with a broadcast activation. Register tile: MR=4 rows x
// 16 columns (8 accumulators). Threads split the panels. linear_silu_mul takes
// a gate panel and its up panel per tile and writes silu(gate) * up.
#include <immintrin.h>

#include "cpu/fast_exp.h"
#include "cpu/linear_packed.h"
#include "cpu/packed_weights.h"

namespace fastdllm::cpu {

namespace {

// The MR x 16 accumulators of one panel against rows [m0, m0 + MR) of x.
template <int MR>
inline void panel_acc(const float* x, int64_t k, const uint16_t* panel, int64_t kp_n, int64_t m0, __m256 acc[MR][2]) {
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  const __m256i hi_mask = _mm256_set1_epi32(int(0xFFFF0000u));
  const int64_t full = k / 2;
  const uint32_t* p = reinterpret_cast<const uint32_t*>(panel);
  for (int64_t kp = 0; kp < kp_n; ++kp, p += kPanelRows) {
    float xe[MR], xo[MR];
    for (int i = 0; i < MR; ++i) {
      const float* xr = x + (m0 + i) * k;
      xe[i] = xr[2 * kp];
      xo[i] = kp < full ? xr[2 * kp + 1] : 0.f;
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8 * h));
      const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
      const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(raw, hi_mask));
      for (int i = 0; i < MR; ++i) {
        acc[i][h] = _mm256_fmadd_ps(_mm256_set1_ps(xe[i]), we, acc[i][h]);
        acc[i][h] = _mm256_fmadd_ps(_mm256_set1_ps(xo[i]), wo, acc[i][h]);
      }
    }
  }
}

template <int MR>
inline void tile(const float* x, int64_t k, const uint16_t* panel, int64_t kp_n, const float* bias,
                 const float* residual, float* out, int64_t m0, int64_t n0, int64_t n) {
  __m256 acc[MR][2];
  panel_acc<MR>(x, k, panel, kp_n, m0, acc);
  for (int i = 0; i < MR; ++i) {
    alignas(32) float v[16];
    _mm256_store_ps(v, acc[i][0]);
    _mm256_store_ps(v + 8, acc[i][1]);
    const int64_t cols = n - n0 < 16 ? n - n0 : 16;
    for (int64_t j = 0; j < cols; ++j) {
      const int64_t idx = (m0 + i) * n + n0 + j;
      float r = v[j];
      if (bias) r += bias[n0 + j];
      if (residual) r += residual[idx];
      out[idx] = r;
    }
  }
}

// A gate panel and its up panel (pack_gate_up_rows) -> 16 columns of silu(g) * u.
template <int MR>
inline void silu_tile(const float* x, int64_t k, const uint16_t* gate_panel, int64_t kp_n, float* out, int64_t m0,
                      int64_t c0, int64_t inter) {
  __m256 g[MR][2], u[MR][2];
  panel_acc<MR>(x, k, gate_panel, kp_n, m0, g);
  panel_acc<MR>(x, k, gate_panel + kp_n * kPanelRows * 2, kp_n, m0, u);
  for (int i = 0; i < MR; ++i) {
    alignas(32) float gv[16], uv[16];
    _mm256_store_ps(gv, g[i][0]);
    _mm256_store_ps(gv + 8, g[i][1]);
    _mm256_store_ps(uv, u[i][0]);
    _mm256_store_ps(uv + 8, u[i][1]);
    float* o = out + (m0 + i) * inter + c0;
#pragma omp simd
    for (int j = 0; j < 16; ++j) o[j] = gv[j] / (1.0f + fast_exp(-gv[j])) * uv[j];  // as cpu::silu_mul
  }
}

}  // namespace

void linear_silu_mul_packed_avx2(const float* x, const uint16_t* w, float* out, int64_t m, int64_t inter,
                                 int64_t k) {
  const int64_t kp_n = packed_pairs(k), pairs = inter / kPanelRows;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pairs; ++p) {
    const uint16_t* gate_panel = w + 2 * p * kp_n * kPanelRows * 2;
    int64_t m0 = 0;
    for (; m0 + 4 <= m; m0 += 4) silu_tile<4>(x, k, gate_panel, kp_n, out, m0, p * kPanelRows, inter);
    for (; m0 < m; ++m0) silu_tile<1>(x, k, gate_panel, kp_n, out, m0, p * kPanelRows, inter);
  }
}

void linear_packed_avx2(const float* x, const uint16_t* w, const float* bias, const float* residual,
                        float* out, int64_t m, int64_t n, int64_t k) {
  const int64_t panels = (n + kPanelRows - 1) / kPanelRows;
  const int64_t kp_n = packed_pairs(k);
#pragma omp parallel for schedule(static)
  for (int64_t pi = 0; pi < panels; ++pi) {
    const uint16_t* panel = w + pi * kp_n * kPanelRows * 2;
    int64_t m0 = 0;
    for (; m0 + 4 <= m; m0 += 4) tile<4>(x, k, panel, kp_n, bias, residual, out, m0, pi * kPanelRows, n);
    for (; m0 < m; ++m0) tile<1>(x, k, panel, kp_n, bias, residual, out, m0, pi * kPanelRows, n);
  }
}

}  // namespace fastdllm::cpu
