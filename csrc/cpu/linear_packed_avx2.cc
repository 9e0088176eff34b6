// AVX2 kernel on packed bf16 weights: per k-pair, each 256-bit half-panel load
// gives 8 columns x 2 k's; a shift and a mask turn it into two exact fp32
// vectors, each FMA'd with a broadcast activation. Register tile: up to 6 rows
// x 16 columns (12 accumulators). Threads split the panels. linear_silu_mul takes
// a gate panel and its up panel per tile and writes silu(gate) * up.
#include <immintrin.h>

#include <type_traits>

#include "cpu/fast_exp.h"
#include "cpu/linear_packed.h"
#include "cpu/packed_weights.h"

namespace fastdllm::cpu {

namespace {

// The MR x 16 accumulators of one panel against rows [m0, m0 + MR) of x. The
// activations are broadcast straight from memory (a load, no shuffle: the FP
// pipes stay with the FMAs); one half-panel's two weight vectors are live at a
// time, so MR = 6 fits 12 accumulators + 2 weights + 1 broadcast in 16 ymm.
template <int MR>
inline void panel_acc(const float* x, int64_t k, const uint16_t* panel, int64_t kp_n, int64_t m0, __m256 acc[MR][2]) {
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  const __m256i hi_mask = _mm256_set1_epi32(int(0xFFFF0000u));
  const int64_t full = k / 2;  // pairs with both k's real; an odd k pads the last pair's second
  const uint32_t* p = reinterpret_cast<const uint32_t*>(panel);
  const float* xr[MR];
  for (int i = 0; i < MR; ++i) xr[i] = x + (m0 + i) * k;
  int64_t kp = 0;
  for (; kp < full; ++kp, p += kPanelRows) {
    for (int h = 0; h < 2; ++h) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8 * h));
      const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
      const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(raw, hi_mask));
      for (int i = 0; i < MR; ++i) {
        acc[i][h] = _mm256_fmadd_ps(_mm256_broadcast_ss(xr[i] + 2 * kp), we, acc[i][h]);
        acc[i][h] = _mm256_fmadd_ps(_mm256_broadcast_ss(xr[i] + 2 * kp + 1), wo, acc[i][h]);
      }
    }
  }
  if (kp < kp_n) {
    for (int h = 0; h < 2; ++h) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 8 * h));
      const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
      for (int i = 0; i < MR; ++i) acc[i][h] = _mm256_fmadd_ps(_mm256_broadcast_ss(xr[i] + 2 * kp), we, acc[i][h]);
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

// Calls f(integral_constant<MR>, m0) over rows [0, m) in the fewest tiles of at
// most kMaxRows rows, balanced (8 rows: 4 + 4, not 6 + 2: each tile streams the
// panel once, and a thin one wastes that read).
constexpr int kMaxRows = 6;
template <class F>
inline void for_row_tiles(int64_t m, F&& f) {
  const int64_t tiles = (m + kMaxRows - 1) / kMaxRows;
  int64_t m0 = 0;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t rows = m / tiles + (t < m % tiles ? 1 : 0);
    switch (rows) {
      case 6: f(std::integral_constant<int, 6>{}, m0); break;
      case 5: f(std::integral_constant<int, 5>{}, m0); break;
      case 4: f(std::integral_constant<int, 4>{}, m0); break;
      case 3: f(std::integral_constant<int, 3>{}, m0); break;
      case 2: f(std::integral_constant<int, 2>{}, m0); break;
      default: f(std::integral_constant<int, 1>{}, m0); break;
    }
    m0 += rows;
  }
}

}  // namespace

void linear_silu_mul_packed_avx2(const float* x, const uint16_t* w, float* out, int64_t m, int64_t inter,
                                 int64_t k) {
  const int64_t kp_n = packed_pairs(k), pairs = inter / kPanelRows;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < pairs; ++p) {
    const uint16_t* gate_panel = w + 2 * p * kp_n * kPanelRows * 2;
    for_row_tiles(m, [&](auto mr, int64_t m0) {
      silu_tile<decltype(mr)::value>(x, k, gate_panel, kp_n, out, m0, p * kPanelRows, inter);
    });
  }
}

void linear_packed_avx2(const float* x, const uint16_t* w, const float* bias, const float* residual,
                        float* out, int64_t m, int64_t n, int64_t k) {
  const int64_t panels = (n + kPanelRows - 1) / kPanelRows;
  const int64_t kp_n = packed_pairs(k);
#pragma omp parallel for schedule(static)
  for (int64_t pi = 0; pi < panels; ++pi) {
    const uint16_t* panel = w + pi * kp_n * kPanelRows * 2;
    for_row_tiles(m, [&](auto mr, int64_t m0) {
      tile<decltype(mr)::value>(x, k, panel, kp_n, bias, residual, out, m0, pi * kPanelRows, n);
    });
  }
}

}  // namespace fastdllm::cpu
