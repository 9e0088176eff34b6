// AVX-512 BF16 kernel on integer codes (cpu/int_weights.h). The activations are
// rounded to bf16 pairs once per call, with each group's sum of the rounded
// values; per input pair one 128-bit code load per panel becomes 16 bf16 pairs
// and one vdpbf16ps per (row, panel) accumulates a group. At a group's end the
// accumulators are scaled and the zero point subtracted once:
//   total += s * acc - (s * z') * xsum.
// int4 codes decode with the exponent trick: 0x4300 | q is the bf16 of 128 + q
// (exact), so z' = z + 128; int8 codes go through fp32 (exact for 0..255).
// Register tile: MR rows x NP panels, as the bf16 kernel (1 x 4 for one or two
// rows, 8 x 2 otherwise); the totals live in a small stack array.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/fast_exp.h"
#include "cpu/int_codes_avx512.h"
#include "cpu/int_weights.h"
#include "cpu/linear_int.h"
#include "cpu/load_row.h"

namespace fastdllm::cpu {

namespace {

inline void store_silu_mul(__m512 g, __m512 u, float* out) {
  alignas(64) float gv[16], uv[16];
  _mm512_store_ps(gv, g);
  _mm512_store_ps(uv, u);
#pragma omp simd
  for (int j = 0; j < 16; ++j) gv[j] = gv[j] / (1.0f + fast_exp(-gv[j])) * uv[j];  // as cpu::silu_mul
  _mm512_storeu_ps(out, _mm512_load_ps(gv));
}

using Args = Bf16IntGemm;

template <int Bits, int MR, int NP, bool SILU>
inline void tile(const Args& a, int64_t pi0, int64_t m0) {
  constexpr int64_t PB = Codes<Bits>::kPairBytes;
  const uint8_t* wp[NP];
  int64_t pj[NP];
  for (int j = 0; j < NP; ++j) {
    pj[j] = std::min(pi0 + j, a.panels - 1);
    wp[j] = a.w->codes + pj[j] * a.kp_n * PB;
  }
  __m512 tot[MR][NP];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NP; ++j) tot[i][j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < a.groups; ++g) {
    __m512 acc[MR][NP];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_ps();
    for (int64_t kp = g * a.gp, ke = kp + a.gp; kp < ke; ++kp) {
      __m512i wr[NP];
      for (int j = 0; j < NP; ++j) wr[j] = Codes<Bits>::decode(wp[j] + kp * PB);
      for (int i = 0; i < MR; ++i) {
        const __m512i xb = _mm512_set1_epi32(int(a.xp[(m0 + i) * a.kp_n + kp]));
        for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], (__m512bh)xb, (__m512bh)wr[j]);
      }
    }
    for (int j = 0; j < NP; ++j) {
      const int64_t at = (pj[j] * a.groups + g) * kPanelRows;
      const __m512 s = _mm512_loadu_ps(a.w->scales + at);
      __m512 sz = _mm512_loadu_ps(a.w->zero_scales + at);
      if (Codes<Bits>::kOffset != 0.f) sz = _mm512_fmadd_ps(s, _mm512_set1_ps(Codes<Bits>::kOffset), sz);
      for (int i = 0; i < MR; ++i) {
        const __m512 xs = _mm512_set1_ps(a.xs[(m0 + i) * a.groups + g]);
        tot[i][j] = _mm512_fmadd_ps(acc[i][j], s, _mm512_fnmadd_ps(xs, sz, tot[i][j]));
      }
    }
  }
  if constexpr (SILU) {
    static_assert(NP % 2 == 0, "gate and up panels come in pairs");
    for (int j = 0; j < NP; j += 2) {
      const int64_t c0 = (pi0 + j) / 2 * kPanelRows;  // output column of the pair
      if (2 * c0 >= a.n) break;
      for (int i = 0; i < MR; ++i) store_silu_mul(tot[i][j], tot[i][j + 1], a.out + (m0 + i) * (a.n / 2) + c0);
    }
    return;
  }
  for (int j = 0; j < NP; ++j) {
    const int64_t n0 = (pi0 + j) * kPanelRows;
    if (n0 >= a.n) break;
    const int64_t cols = std::min<int64_t>(a.n - n0, kPanelRows);
    const __mmask16 mask = __mmask16((1u << cols) - 1u);
    const __m512 b = a.bias ? _mm512_maskz_loadu_ps(mask, a.bias + n0) : _mm512_setzero_ps();
    for (int i = 0; i < MR; ++i) {
      __m512 v = _mm512_add_ps(tot[i][j], b);
      if (a.residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, a.residual + (m0 + i) * a.n + n0));
      _mm512_mask_storeu_ps(a.out + (m0 + i) * a.n + n0, mask, v);
    }
  }
}

template <int Bits, int MR, int NP, bool SILU>
void run(const Args& a, int64_t m) {
  const int64_t groups = (a.panels + NP - 1) / NP;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    int64_t m0 = 0;
    for (; m0 + MR <= m; m0 += MR) tile<Bits, MR, NP, SILU>(a, g * NP, m0);
    for (; m0 < m; ++m0) tile<Bits, 1, NP, SILU>(a, g * NP, m0);
  }
}

template <int Bits, bool SILU>
void dispatch_rows(const Args& a, int64_t m) {
  if (m <= 2)
    run<Bits, 1, 4, SILU>(a, m);
  else
    run<Bits, 8, 2, SILU>(a, m);
}

void pack_int_activations(const float* x, const int32_t* perm, int64_t m, int64_t k, int64_t group, int64_t m_pad,
                          uint32_t* xp, float* xs) {
  const int64_t kp_n = k / 2, groups = k / group;
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * k;
    uint32_t* d = xp + r * kp_n;
    int64_t c = 0;
    if (!perm)
      for (; c + 32 <= k; c += 32) {
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(xr + c + 16), _mm512_loadu_ps(xr + c));
        _mm512_storeu_si512(d + c / 2, (__m512i)v);
      }
    for (; c < k; c += 2) {
      const float lo = perm ? xr[perm[c]] : xr[c], hi = perm ? xr[perm[c + 1]] : xr[c + 1];
      d[c / 2] = uint32_t(f32_to_bf16(lo)) | uint32_t(f32_to_bf16(hi)) << 16;
    }
    for (int64_t g = 0; g < groups; ++g) {
      __m512 s = _mm512_setzero_ps();
      int64_t p = g * group / 2;
      const int64_t pe = p + group / 2;
      for (; p + 16 <= pe; p += 16) {
        const __m512i v = _mm512_loadu_si512(d + p);
        s = _mm512_add_ps(s, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
        s = _mm512_add_ps(s, _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xFFFF0000u)))));
      }
      float t = _mm512_reduce_add_ps(s);
      for (; p < pe; ++p) t += bf16_to_f32(uint16_t(d[p])) + bf16_to_f32(uint16_t(d[p] >> 16));
      xs[r * groups + g] = t;
    }
  }
  std::memset(xp + m * kp_n, 0, size_t((m_pad - m) * kp_n) * 4);
  std::memset(xs + m * groups, 0, size_t((m_pad - m) * groups) * 4);
}

}  // namespace

Bf16IntGemm prepare_bf16_int_gemm(const float* x, const IntWeight& w, const float* bias, const float* residual,
                                  float* out, int64_t m, int64_t n, int64_t k, int64_t m_pad) {
  Bf16IntGemm a;
  a.kp_n = k / 2;
  a.groups = k / w.group;
  a.gp = w.group / 2;
  uint32_t* xp = reinterpret_cast<uint32_t*>(scratch_floats(m_pad * a.kp_n, 0));
  float* xs = scratch_floats(m_pad * a.groups, 3);
  pack_int_activations(x, w.perm, m, k, w.group, m_pad, xp, xs);
  a.xp = xp;
  a.xs = xs;
  a.w = &w;
  a.panels = int_panels(n);
  a.bias = bias;
  a.residual = residual;
  a.out = out;
  a.m = m;
  a.n = n;
  return a;
}

void linear_int_avx512bf16(const float* x, const IntWeight& w, const float* bias, const float* residual, float* out,
                           int64_t m, int64_t n, int64_t k, bool silu) {
  const Args a = prepare_bf16_int_gemm(x, w, bias, residual, out, m, n, k, m);
  if (w.bits == 4)
    silu ? dispatch_rows<4, true>(a, m) : dispatch_rows<4, false>(a, m);
  else
    silu ? dispatch_rows<8, true>(a, m) : dispatch_rows<8, false>(a, m);
}

}  // namespace fastdllm::cpu
