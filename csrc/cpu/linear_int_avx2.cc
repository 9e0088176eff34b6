// AVX2 kernel on integer codes (cpu/int_weights.h): fp32 activations, codes
// converted to fp32 in registers, fp32 FMA; per group the accumulators are
// scaled and the zero point subtracted once (total += s * acc - s z * xsum).
// Register tile: MR rows x NP panels, each panel two 8-wide halves.
#include <immintrin.h>

#include <algorithm>

#include "cpu/fast_exp.h"
#include "cpu/int_weights.h"
#include "cpu/linear_int.h"
#include "cpu/load_row.h"

namespace fastdllm::cpu {

namespace {

// The codes of 8 rows (half h of a panel) for one input pair: even and odd input.
template <int Bits>
inline void decode(const uint8_t* p, int h, __m256& even, __m256& odd) {
  if constexpr (Bits == 4) {
    const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * h)));
    even = _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(0xF)));
    odd = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
  } else {
    even = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * h))));
    odd = _mm256_cvtepi32_ps(
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 16 + 8 * h))));
  }
}

struct Args {
  const float* x;   // [m][k] in the codes' input order
  const float* xs;  // [m][groups]
  int64_t k, groups, group;
  const IntWeight* w;
  int64_t panels;
  const float *bias, *residual;
  float* out;
  int64_t n;
};

template <int Bits, int MR, int NP, bool SILU>
inline void tile(const Args& a, int64_t pi0, int64_t m0) {
  constexpr int64_t PB = Bits == 4 ? 16 : 32;
  const int64_t kp_n = a.k / 2;
  const uint8_t* wp[NP];
  int64_t pj[NP];
  for (int j = 0; j < NP; ++j) {
    pj[j] = std::min(pi0 + j, a.panels - 1);
    wp[j] = a.w->codes + pj[j] * kp_n * PB;
  }
  alignas(32) float tot[MR][NP][16] = {};
  for (int64_t g = 0; g < a.groups; ++g) {
    __m256 acc[MR][NP][2];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NP; ++j) acc[i][j][0] = acc[i][j][1] = _mm256_setzero_ps();
    for (int64_t kp = g * a.group / 2, ke = kp + a.group / 2; kp < ke; ++kp) {
      for (int j = 0; j < NP; ++j)
        for (int h = 0; h < 2; ++h) {
          __m256 we, wo;
          decode<Bits>(wp[j] + kp * PB, h, we, wo);
          for (int i = 0; i < MR; ++i) {
            const float* xr = a.x + (m0 + i) * a.k + 2 * kp;
            acc[i][j][h] = _mm256_fmadd_ps(_mm256_broadcast_ss(xr), we, acc[i][j][h]);
            acc[i][j][h] = _mm256_fmadd_ps(_mm256_broadcast_ss(xr + 1), wo, acc[i][j][h]);
          }
        }
    }
    for (int j = 0; j < NP; ++j)
      for (int h = 0; h < 2; ++h) {
        const int64_t at = (pj[j] * a.groups + g) * kPanelRows + 8 * h;
        const __m256 s = _mm256_loadu_ps(a.w->scales + at), sz = _mm256_loadu_ps(a.w->zero_scales + at);
        for (int i = 0; i < MR; ++i) {
          const __m256 xs = _mm256_set1_ps(a.xs[(m0 + i) * a.groups + g]);
          float* t = tot[i][j] + 8 * h;
          _mm256_store_ps(t, _mm256_fmadd_ps(acc[i][j][h], s, _mm256_fnmadd_ps(xs, sz, _mm256_load_ps(t))));
        }
      }
  }
  if constexpr (SILU) {
    static_assert(NP % 2 == 0, "gate and up panels come in pairs");
    for (int j = 0; j < NP; j += 2) {
      const int64_t c0 = (pi0 + j) / 2 * kPanelRows;
      if (2 * c0 >= a.n) break;
      for (int i = 0; i < MR; ++i) {
        float* o = a.out + (m0 + i) * (a.n / 2) + c0;
        for (int c = 0; c < kPanelRows; ++c) {
          const float gt = tot[i][j][c];
          o[c] = gt / (1.0f + fast_exp(-gt)) * tot[i][j + 1][c];  // as cpu::silu_mul
        }
      }
    }
    return;
  }
  for (int j = 0; j < NP; ++j) {
    const int64_t n0 = (pi0 + j) * kPanelRows;
    if (n0 >= a.n) break;
    const int64_t cols = std::min<int64_t>(a.n - n0, kPanelRows);
    for (int i = 0; i < MR; ++i) {
      float* o = a.out + (m0 + i) * a.n + n0;
      const float* res = a.residual ? a.residual + (m0 + i) * a.n + n0 : nullptr;
      for (int64_t c = 0; c < cols; ++c) {
        float v = tot[i][j][c];
        if (a.bias) v += a.bias[n0 + c];
        if (res) v += res[c];
        o[c] = v;
      }
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
    run<Bits, 4, 2, SILU>(a, m);
}

}  // namespace

void linear_int_avx2(const float* x, const IntWeight& w, const float* bias, const float* residual, float* out,
                     int64_t m, int64_t n, int64_t k, bool silu) {
  Args a;
  a.k = k;
  a.group = w.group;
  a.groups = k / w.group;
  if (w.perm) {  // the activations in the codes' input order
    float* xp = scratch_floats(m * k, 0);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < k; ++c) xp[r * k + c] = x[r * k + w.perm[c]];
    x = xp;
  }
  float* xs = scratch_floats(m * a.groups, 3);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t g = 0; g < a.groups; ++g) {
      float t = 0.f;
      for (int64_t c = g * w.group; c < (g + 1) * w.group; ++c) t += x[r * k + c];
      xs[r * a.groups + g] = t;
    }
  a.x = x;
  a.xs = xs;
  a.w = &w;
  a.panels = int_panels(n);
  a.bias = bias;
  a.residual = residual;
  a.out = out;
  a.n = n;
  if (w.bits == 4)
    silu ? dispatch_rows<4, true>(a, m) : dispatch_rows<4, false>(a, m);
  else
    silu ? dispatch_rows<8, true>(a, m) : dispatch_rows<8, false>(a, m);
}

}  // namespace fastdllm::cpu
