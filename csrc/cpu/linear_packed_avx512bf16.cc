// AVX-512 BF16 kernel on packed bf16 weights. The activations are rounded to
// bf16 once per call (into per-thread scratch, as k-pairs), then each k-pair
// step is one 512-bit weight load per panel and one vdpbf16ps per (row, panel):
// 16 columns x 2 k's x 2 flops. Register tile: MR rows x NP panels
// (MR x NP zmm accumulators): 8 x 2 for many rows (compute-bound), 1..2 x 4 for
// one or two rows (weight-streaming, four independent accumulator chains).
// Compiled with AVX-512 flags; called only when cpu::isa() reports AVX512_BF16.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/fast_exp.h"
#include "cpu/linear_packed.h"
#include "cpu/load_row.h"
#include "cpu/packed_weights.h"

namespace fastdllm::cpu {

namespace {

// out[i, :] = silu(g) * u for a pair of gate / up accumulators (16 columns).
inline void store_silu_mul(__m512 g, __m512 u, float* out, __mmask16 mask) {
  alignas(64) float gv[16], uv[16];
  _mm512_store_ps(gv, g);
  _mm512_store_ps(uv, u);
#pragma omp simd
  for (int j = 0; j < 16; ++j) gv[j] = gv[j] / (1.0f + fast_exp(-gv[j])) * uv[j];  // as cpu::silu_mul
  _mm512_mask_storeu_ps(out, mask, _mm512_load_ps(gv));
}

// SILU: w is the gate/up-interleaved matrix (pack_gate_up_rows), NP even, and
// out is [M, n / 2]; otherwise out[M, n] = acc + bias + residual.
template <int MR, int NP, bool SILU = false>
inline void tile(const uint32_t* xp, int64_t kp_n, const uint16_t* w, int64_t pi0, int64_t panels,
                 const float* bias, const float* residual, float* out, int64_t m0, int64_t n) {
  __m512 acc[MR][NP];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_ps();
  const uint32_t* wp[NP];
  for (int j = 0; j < NP; ++j)
    wp[j] = reinterpret_cast<const uint32_t*>(w) + std::min(pi0 + j, panels - 1) * kp_n * kPanelRows;
  for (int64_t kp = 0; kp < kp_n; ++kp) {
    __m512i wr[NP];
    for (int j = 0; j < NP; ++j) wr[j] = _mm512_loadu_si512(wp[j] + kp * kPanelRows);
    for (int i = 0; i < MR; ++i) {
      const __m512i xb = _mm512_set1_epi32(int(xp[(m0 + i) * kp_n + kp]));
      for (int j = 0; j < NP; ++j)
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], (__m512bh)xb, (__m512bh)wr[j]);
    }
  }
  if constexpr (SILU) {
    static_assert(NP % 2 == 0, "gate and up panels come in pairs");
    for (int j = 0; j < NP; j += 2) {
      const int64_t c0 = (pi0 + j) / 2 * kPanelRows;  // output column of the pair
      if (2 * c0 >= n) break;
      for (int i = 0; i < MR; ++i) store_silu_mul(acc[i][j], acc[i][j + 1], out + (m0 + i) * (n / 2) + c0, 0xFFFF);
    }
    return;
  }
  for (int j = 0; j < NP; ++j) {
    const int64_t n0 = (pi0 + j) * kPanelRows;
    if (n0 >= n) break;
    const int64_t cols = n - n0 < kPanelRows ? n - n0 : kPanelRows;
    const __mmask16 mask = __mmask16((1u << cols) - 1u);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
    for (int i = 0; i < MR; ++i) {
      float* o = out + (m0 + i) * n + n0;
      __m512 v = _mm512_add_ps(acc[i][j], b);
      if (residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, residual + (m0 + i) * n + n0));
      _mm512_mask_storeu_ps(o, mask, v);
    }
  }
}

template <int MR, int NP, bool SILU = false>
void run(const uint32_t* xp, int64_t m, int64_t kp_n, const uint16_t* w, int64_t panels, const float* bias,
         const float* residual, float* out, int64_t n) {
  const int64_t groups = (panels + NP - 1) / NP;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    int64_t m0 = 0;
    for (; m0 + MR <= m; m0 += MR) tile<MR, NP, SILU>(xp, kp_n, w, g * NP, panels, bias, residual, out, m0, n);
    for (; m0 < m; ++m0) tile<1, NP, SILU>(xp, kp_n, w, g * NP, panels, bias, residual, out, m0, n);
  }
}

}  // namespace

const uint32_t* pack_bf16_pairs(const float* x, int64_t m, int64_t k, int64_t m_pad) {
  const int64_t kp_n = packed_pairs(k);
  uint32_t* xp = reinterpret_cast<uint32_t*>(scratch_floats(m_pad * kp_n, 0));
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * k;
    uint32_t* d = xp + r * kp_n;
    int64_t c = 0;
    for (; c + 32 <= k; c += 32) {
      // cvtne2ps_pbh(a, b): b fills the low half, a the high half of the result.
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(xr + c + 16), _mm512_loadu_ps(xr + c));
      _mm512_storeu_si512(d + c / 2, (__m512i)v);
    }
    for (; c < k; c += 2) {
      const uint32_t lo = f32_to_bf16(xr[c]);
      const uint32_t hi = c + 1 < k ? f32_to_bf16(xr[c + 1]) : 0u;
      d[c / 2] = lo | (hi << 16);
    }
  }
  std::memset(xp + m * kp_n, 0, size_t((m_pad - m) * kp_n) * 4);
  return xp;
}

void linear_packed_avx512bf16(const float* x, const uint16_t* w, const float* bias, const float* residual,
                              float* out, int64_t m, int64_t n, int64_t k) {
  const int64_t kp_n = packed_pairs(k), panels = (n + kPanelRows - 1) / kPanelRows;
  const uint32_t* xp = pack_bf16_pairs(x, m, k, m);
  if (m <= 2)
    run<1, 4>(xp, m, kp_n, w, panels, bias, residual, out, n);
  else
    run<8, 2>(xp, m, kp_n, w, panels, bias, residual, out, n);
}

void linear_silu_mul_packed_avx512bf16(const float* x, const uint16_t* w, float* out, int64_t m, int64_t inter,
                                       int64_t k) {
  const int64_t kp_n = packed_pairs(k), panels = 2 * inter / kPanelRows;
  const uint32_t* xp = pack_bf16_pairs(x, m, k, m);
  if (m <= 2)
    run<1, 4, true>(xp, m, kp_n, w, panels, nullptr, nullptr, out, 2 * inter);
  else
    run<8, 2, true>(xp, m, kp_n, w, panels, nullptr, nullptr, out, 2 * inter);
}

}  // namespace fastdllm::cpu
