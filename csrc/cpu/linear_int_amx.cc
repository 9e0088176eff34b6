// AMX BF16 kernel on integer codes (cpu/int_weights.h). Codes are decoded, 16
// input pairs x 16 columns at a time, into 1 KiB bf16 B tiles in L1 (the layout
// of the packed bf16 weights, cpu/linear_packed_amx.cc) and multiplied with
// TDPBF16PS; each group of k (group_size, a multiple of 32) is accumulated in
// its own C tiles, which are then scaled into fp32 totals with AVX-512:
//   total += s * acc - (s * z') * xsum,
// as the AVX-512 BF16 kernel does per register (same operands: bf16-rounded
// activations, exact codes; int4 decodes as 128 + q, z' = z + 128).
//
// Blocks: MB A tiles (16 rows each) x 2 B tiles (panels), (1, 2) up to 16 rows
// (two pairs of C tiles, alternating between groups) and (2, 2) above; with SiLU*mul the two panels are a gate panel and its up
// panel. Threads split the column blocks; each decodes its B tiles once per row
// block. Compiled with AMX flags; called only when cpu::isa() reports AMX_BF16.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/amx_tiles.h"
#include "cpu/fast_exp.h"
#include "cpu/int_codes_avx512.h"
#include "cpu/int_weights.h"
#include "cpu/linear_int.h"
#include "cpu/load_row.h"

namespace fastdllm::cpu {

namespace {

constexpr int kT = amx::kTileRows;  // tile rows; fp32 columns of a C tile; k-pairs of a B tile

using Args = Bf16IntGemm;  // activations padded to m_pad rows (below)

template <int Bits>
inline void decode_tile(const uint8_t* codes, int64_t kb, uint32_t* dst) {
  for (int r = 0; r < kT; ++r)
    _mm512_store_si512(dst + r * kT, Codes<Bits>::decode(codes + (kb + r) * Codes<Bits>::kPairBytes));
}

// The code stream of a panel runs ahead of the decode by this many input pairs
// (software prefetch: the tiles' decode and TDPBF16PS otherwise wait for each
// line in turn).
constexpr int64_t kPrefetchPairs = 64;

template <int Bits>
inline void prefetch_codes(const uint8_t* codes, int64_t kp, int64_t kp_n) {
  if (kp >= kp_n) return;
  const char* p = reinterpret_cast<const char*>(codes + kp * Codes<Bits>::kPairBytes);
  for (int64_t b = 0; b < kT * Codes<Bits>::kPairBytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
}

// tot[r][j*16 + c] += s * acc - s z' * xsum for a group's C tiles in cbuf.
template <int Bits, int MB>
inline void scale_group(const Args& a, int64_t pi0, int64_t m0, int64_t g, const float* cbuf, float* tot) {
  constexpr int ld = 2 * kT;
  const int64_t rows = std::min<int64_t>(MB * kT, a.m - m0);
  for (int j = 0; j < 2; ++j) {
    const int64_t at = (std::min(pi0 + j, a.panels - 1) * a.groups + g) * kT;
    const __m512 s = _mm512_loadu_ps(a.w->scales + at);
    __m512 sz = _mm512_loadu_ps(a.w->zero_scales + at);
    if (Codes<Bits>::kOffset != 0.f) sz = _mm512_fmadd_ps(s, _mm512_set1_ps(Codes<Bits>::kOffset), sz);
    for (int64_t r = 0; r < rows; ++r) {
      float* t = tot + r * ld + j * kT;
      const __m512 xs = _mm512_set1_ps(a.xs[(m0 + r) * a.groups + g]);
      _mm512_store_ps(t, _mm512_fmadd_ps(_mm512_load_ps(cbuf + r * ld + j * kT), s,
                                         _mm512_fnmadd_ps(xs, sz, _mm512_load_ps(t))));
    }
  }
}

template <int MB, bool SILU>
void epilogue(const Args& a, int64_t pi0, int64_t m0, const float* tot) {
  constexpr int ld = 2 * kT;
  const int64_t rows = std::min<int64_t>(MB * kT, a.m - m0);
  if constexpr (SILU) {
    const int64_t c0 = pi0 / 2 * kT;  // gate panel pi0, up panel pi0 + 1
    if (c0 >= a.n / 2) return;
    for (int64_t r = 0; r < rows; ++r) {
      alignas(64) float g[kT];
      const float* u = tot + r * ld + kT;
      std::memcpy(g, tot + r * ld, sizeof g);
#pragma omp simd
      for (int c = 0; c < kT; ++c) g[c] = g[c] / (1.0f + fast_exp(-g[c])) * u[c];  // as cpu::silu_mul
      _mm512_storeu_ps(a.out + (m0 + r) * (a.n / 2) + c0, _mm512_load_ps(g));
    }
    return;
  }
  for (int j = 0; j < 2; ++j) {
    const int64_t n0 = (pi0 + j) * kT;
    if (n0 >= a.n) break;
    const int64_t cols = std::min<int64_t>(kT, a.n - n0);
    const __mmask16 mask = __mmask16((1u << cols) - 1u);
    const __m512 b = a.bias ? _mm512_maskz_loadu_ps(mask, a.bias + n0) : _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; ++r) {
      __m512 v = _mm512_add_ps(_mm512_load_ps(tot + r * ld + j * kT), b);
      if (a.residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, a.residual + (m0 + r) * a.n + n0));
      _mm512_mask_storeu_ps(a.out + (m0 + r) * a.n + n0, mask, v);
    }
  }
}

// One group's k-tiles of a (1, 2) block into C tiles C0, C1 (A 0, B 1-2): two
// pairs of C tiles alternate between groups, so a group's drain (tile store,
// scaling) overlaps the next group's products. Tile numbers must be literals
// in the intrinsics (they are pasted into the assembly), hence the macro.
#define FDL_INT_GROUP_1X2(NAME, C0, C1)                                                                     \
  template <int Bits>                                                                                       \
  inline void NAME(const Args& a, const uint8_t* w0, const uint8_t* w1, const uint32_t* x0, int64_t g,     \
                   uint32_t* bt, float* cbuf) {                                                             \
    const int64_t lda = a.kp_n * 4;                                                                         \
    _tile_zero(C0);                                                                                         \
    _tile_zero(C1);                                                                                         \
    for (int64_t kb = g * a.gp, ke = kb + a.gp; kb < ke; kb += kT) {                                        \
      prefetch_codes<Bits>(w0, kb + kPrefetchPairs, a.kp_n);                                                \
      prefetch_codes<Bits>(w1, kb + kPrefetchPairs, a.kp_n);                                                \
      decode_tile<Bits>(w0, kb, bt);                                                                        \
      decode_tile<Bits>(w1, kb, bt + kT * kT);                                                              \
      _tile_loadd(0, x0 + kb, lda);                                                                         \
      _tile_loadd(1, bt, 64);                                                                               \
      _tile_loadd(2, bt + kT * kT, 64);                                                                     \
      _tile_dpbf16ps(C0, 0, 1);                                                                             \
      _tile_dpbf16ps(C1, 0, 2);                                                                             \
    }                                                                                                       \
    _tile_stored(C0, cbuf, 2 * kT * 4);                                                                     \
    _tile_stored(C1, cbuf + kT, 2 * kT * 4);                                                                \
  }
FDL_INT_GROUP_1X2(group_1x2_even, 3, 4)
FDL_INT_GROUP_1X2(group_1x2_odd, 5, 6)
#undef FDL_INT_GROUP_1X2

// One group of a (2, 2) block (A 0-1, B 2-3, C 4-7).
template <int Bits>
inline void group_2x2(const Args& a, const uint8_t* w0, const uint8_t* w1, const uint32_t* x0, int64_t g,
                      uint32_t* bt, float* cbuf) {
  constexpr int ld = 2 * kT;
  const int64_t lda = a.kp_n * 4;
  const uint32_t* x1 = x0 + kT * a.kp_n;
  _tile_zero(4);
  _tile_zero(5);
  _tile_zero(6);
  _tile_zero(7);
  for (int64_t kb = g * a.gp, ke = kb + a.gp; kb < ke; kb += kT) {
    prefetch_codes<Bits>(w0, kb + kPrefetchPairs, a.kp_n);
    prefetch_codes<Bits>(w1, kb + kPrefetchPairs, a.kp_n);
    decode_tile<Bits>(w0, kb, bt);
    decode_tile<Bits>(w1, kb, bt + kT * kT);
    _tile_loadd(0, x0 + kb, lda);
    _tile_loadd(1, x1 + kb, lda);
    _tile_loadd(2, bt, 64);
    _tile_loadd(3, bt + kT * kT, 64);
    _tile_dpbf16ps(4, 0, 2);
    _tile_dpbf16ps(5, 0, 3);
    _tile_dpbf16ps(6, 1, 2);
    _tile_dpbf16ps(7, 1, 3);
  }
  _tile_stored(4, cbuf, ld * 4);
  _tile_stored(5, cbuf + kT, ld * 4);
  _tile_stored(6, cbuf + kT * ld, ld * 4);
  _tile_stored(7, cbuf + kT * ld + kT, ld * 4);
}

// One block: rows [m0, m0 + 16 MB) x panels pi0, pi0 + 1.
template <int Bits, int MB, bool SILU>
void block(const Args& a, int64_t pi0, int64_t m0, uint32_t* bt, float* cbuf, float* tot) {
  const int64_t PB = Codes<Bits>::kPairBytes;
  const uint8_t* w0 = a.w->codes + std::min(pi0, a.panels - 1) * a.kp_n * PB;
  const uint8_t* w1 = a.w->codes + std::min(pi0 + 1, a.panels - 1) * a.kp_n * PB;
  const uint32_t* x0 = a.xp + m0 * a.kp_n;
  std::memset(tot, 0, sizeof(float) * MB * kT * 2 * kT);
  for (int64_t g = 0; g < a.groups; ++g) {
    if constexpr (MB == 1) {
      float* cb = cbuf + (g % 2) * kT * 2 * kT;
      if (g % 2 == 0)
        group_1x2_even<Bits>(a, w0, w1, x0, g, bt, cb);
      else
        group_1x2_odd<Bits>(a, w0, w1, x0, g, bt, cb);
      scale_group<Bits, MB>(a, pi0, m0, g, cb, tot);
    } else {
      group_2x2<Bits>(a, w0, w1, x0, g, bt, cbuf);
      scale_group<Bits, MB>(a, pi0, m0, g, cbuf, tot);
    }
  }
  epilogue<MB, SILU>(a, pi0, m0, tot);
}

template <int Bits, int MB, bool SILU>
void run(const Args& a) {
  const int64_t blocks = (a.panels + 1) / 2;
  const int rows = MB == 1 ? int(std::min<int64_t>(a.m, kT)) : kT;
#pragma omp parallel
  {
    uint8_t tile_rows[8];
    for (int i = 0; i < 8; ++i) tile_rows[i] = uint8_t(rows);
    if (MB == 1)
      tile_rows[1] = tile_rows[2] = kT;  // B tiles: 16 k-pairs
    else
      tile_rows[2] = tile_rows[3] = kT;
    amx::load_tile_config(tile_rows);
    alignas(64) uint32_t bt[2 * kT * kT];
    alignas(64) float cbuf[2 * kT * 2 * kT];  // (1, 2): one per C-tile pair; (2, 2): one
    alignas(64) float tot[MB * kT * 2 * kT];
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t m0 = 0; m0 < a.m; m0 += MB * kT) block<Bits, MB, SILU>(a, 2 * b, m0, bt, cbuf, tot);
    _tile_release();
  }
}

template <int Bits, bool SILU>
void dispatch_rows(const Args& a) {
  if (a.m <= kT)
    run<Bits, 1, SILU>(a);
  else
    run<Bits, 2, SILU>(a);
}

}  // namespace

void linear_int_amx(const float* x, const IntWeight& w, const float* bias, const float* residual, float* out,
                    int64_t m, int64_t n, int64_t k, bool silu) {
  // rows above 16 padded with zeros to a whole number of 32-row blocks
  const int64_t m_pad = m <= kT ? m : (m + 2 * kT - 1) / (2 * kT) * (2 * kT);
  const Args a = prepare_bf16_int_gemm(x, w, bias, residual, out, m, n, k, m_pad);
  if (w.bits == 4)
    silu ? dispatch_rows<4, true>(a) : dispatch_rows<4, false>(a);
  else
    silu ? dispatch_rows<8, true>(a) : dispatch_rows<8, false>(a);
}

}  // namespace fastdllm::cpu
