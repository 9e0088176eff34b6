// AMX BF16 kernel on packed bf16 weights (Intel Sapphire / Emerald / Granite
// Rapids). The packed layout (cpu/packed_weights.h) is already the B-operand
// layout of TDPBF16PS: in a panel of 16 output columns, k-pair kp is one 64-byte
// row of 16 (W[n][2kp], W[n][2kp+1]) words, so 16 consecutive k-pairs of a
// panel are one 16 x 64-byte B tile, 1 KiB contiguous. Activations are rounded
// to bf16 pairs (row-major [M][K/2] words, as the AVX-512 BF16 kernel does) and
// loaded as A tiles of 16 rows x 32 k. Nothing is repacked at load.
//
// Tiles (8 registers, each 16 rows x 64 bytes): a block is MB A tiles (16 rows
// each) by NB B tiles (16 columns each), MB*NB C tiles of fp32 accumulators:
// (1, 3) for up to 16 rows, (2, 2) above, (1, 2) / (2, 2) with SiLU*mul (gate
// and up panels alternate, cpu::pack_gate_up_rows). Threads split the column
// blocks; inside a column block the row blocks reuse its weights from L2, so
// every weight byte comes from memory once per call. (Two 16-row blocks of
// (1, 3) instead of one (2, 2) for 17-32 rows were slower: measured.)
//
// K: the tiles cover the first floor(K/32)*32; the rest (odd sizes) is added
// with AVX-512 VDPBF16PS per row after the tiles are stored. Rows of the last
// row block past M read zero padding of the activation scratch and are dropped.
// Epilogues as the AVX-512 kernel: bias, residual, SiLU*mul. Numerics: bf16
// products accumulated in fp32, pairs of k in order (TDPBF16PS), so results
// equal the AVX-512 BF16 kernel's up to fp32 rounding of the accumulation order
// (tests/test_ops.py bounds it). Compiled with AMX flags; called only when
// cpu::isa() reports AMX_BF16 (the OS granted the tile state).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/amx_tiles.h"
#include "cpu/fast_exp.h"
#include "cpu/linear_packed.h"
#include "cpu/load_row.h"
#include "cpu/packed_weights.h"

namespace fastdllm::cpu {

namespace {

constexpr int kTile = amx::kTileRows;  // rows of a tile; columns of a B / C tile
constexpr int kTilePairs = 16;         // k-pairs (32 k) of an A / B tile

// Every tile 64 bytes wide; B tiles (b_tiles: a bit per tile) 16 rows, A and C
// tiles `rows` (fewer than 16 when the whole call has fewer rows, so that
// decoding does not stream 15 padding rows of activations per weight tile).
// Loaded by each thread that runs tiles.
void configure_tiles(int rows, unsigned b_tiles) {
  uint8_t tile_rows[8];
  for (int i = 0; i < 8; ++i) tile_rows[i] = uint8_t(b_tiles >> i & 1u ? kTile : rows);
  amx::load_tile_config(tile_rows);
}

struct Args {
  const uint32_t* xp;    // activations as bf16 pairs, [m rounded up to 32][kp_n], padding rows zero
  int64_t kp_n;          // k-pairs per row
  int64_t kp_tiles;      // k-pairs the tiles cover (a multiple of 16)
  const uint16_t* w;     // packed weights
  int64_t panels;        // 16-column panels of w
  const float* bias;
  const float* residual;
  float* out;
  int64_t m, n;          // out is [m, n] (SiLU: [m, n / 2])
};

inline const uint32_t* panel(const Args& a, int64_t p) {
  return reinterpret_cast<const uint32_t*>(a.w) + std::min(p, a.panels - 1) * a.kp_n * kTile;
}

// A tile load from memory fetches its 16 cache lines with little overlap: a
// prefetch of every line of the weight tile just before the load lets them
// travel at once. (Measured on the AMX Xeon, 1.5B forward: 5-10 % faster than
// no prefetch; prefetching tiles further ahead, into L1 or L2, was slower.)
inline void prefetch_tile(const uint32_t* w, int64_t kb) {
  const char* p = reinterpret_cast<const char*>(w + kb * kTile);
  for (int line = 0; line < 16; ++line) _mm_prefetch(p + 64 * line, _MM_HINT_T0);
}

// C tiles -> cbuf [MB*16][NB*16] fp32, plus the k-pairs the tiles did not cover.
template <int MB, int NB>
void finish_block(const Args& a, int64_t pi0, int64_t m0, float* cbuf) {
  constexpr int ld = NB * kTile;
  const int64_t rows = std::min<int64_t>(MB * kTile, a.m - m0);
  if (a.kp_tiles == a.kp_n) return;
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < NB; ++j) {
      const uint32_t* wp = panel(a, pi0 + j);
      __m512 acc = _mm512_loadu_ps(cbuf + r * ld + j * kTile);
      for (int64_t kp = a.kp_tiles; kp < a.kp_n; ++kp) {
        const __m512i xb = _mm512_set1_epi32(int(a.xp[(m0 + r) * a.kp_n + kp]));
        acc = _mm512_dpbf16_ps(acc, (__m512bh)xb, (__m512bh)_mm512_loadu_si512(wp + kp * kTile));
      }
      _mm512_storeu_ps(cbuf + r * ld + j * kTile, acc);
    }
}

// out rows [m0, m0 + 16 MB) of panels [pi0, pi0 + NB) from cbuf.
template <int MB, int NB, bool SILU>
void epilogue(const Args& a, int64_t pi0, int64_t m0, const float* cbuf) {
  constexpr int ld = NB * kTile;
  const int64_t rows = std::min<int64_t>(MB * kTile, a.m - m0);
  if constexpr (SILU) {
    static_assert(NB % 2 == 0, "gate and up panels come in pairs");
    const int64_t inter = a.n / 2;
    for (int64_t r = 0; r < rows; ++r)
      for (int j = 0; j < NB; j += 2) {
        const int64_t c0 = (pi0 + j) / 2 * kTile;  // output column of the pair
        if (c0 >= inter) break;
        alignas(64) float g[kTile], u[kTile];
        std::memcpy(g, cbuf + r * ld + j * kTile, sizeof g);
        std::memcpy(u, cbuf + r * ld + (j + 1) * kTile, sizeof u);
#pragma omp simd
        for (int c = 0; c < kTile; ++c) g[c] = g[c] / (1.0f + fast_exp(-g[c])) * u[c];  // as cpu::silu_mul
        _mm512_storeu_ps(a.out + (m0 + r) * inter + c0, _mm512_load_ps(g));
      }
    return;
  }
  for (int j = 0; j < NB; ++j) {
    const int64_t n0 = (pi0 + j) * kTile;
    if (n0 >= a.n) break;
    const int64_t cols = std::min<int64_t>(kTile, a.n - n0);
    const __mmask16 mask = __mmask16((1u << cols) - 1u);
    const __m512 b = a.bias ? _mm512_maskz_loadu_ps(mask, a.bias + n0) : _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; ++r) {
      __m512 v = _mm512_add_ps(_mm512_loadu_ps(cbuf + r * ld + j * kTile), b);
      if (a.residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, a.residual + (m0 + r) * a.n + n0));
      _mm512_mask_storeu_ps(a.out + (m0 + r) * a.n + n0, mask, v);
    }
  }
}

// Tile numbers are immediates: one body per block shape.
template <bool SILU>
void block_1x2(const Args& a, int64_t pi0, int64_t m0, float* cbuf) {  // A 0, B 1-2, C 3-4
  _tile_zero(3);
  _tile_zero(4);
  const int64_t lda = a.kp_n * 4;
  const uint32_t* x = a.xp + m0 * a.kp_n;
  const uint32_t *w0 = panel(a, pi0), *w1 = panel(a, pi0 + 1);
  for (int64_t kb = 0; kb < a.kp_tiles; kb += kTilePairs) {
    prefetch_tile(w0, kb);
    prefetch_tile(w1, kb);
    _tile_loadd(0, x + kb, lda);
    _tile_loadd(1, w0 + kb * kTile, 64);
    _tile_loadd(2, w1 + kb * kTile, 64);
    _tile_dpbf16ps(3, 0, 1);
    _tile_dpbf16ps(4, 0, 2);
  }
  _tile_stored(3, cbuf, 2 * kTile * 4);
  _tile_stored(4, cbuf + kTile, 2 * kTile * 4);
  finish_block<1, 2>(a, pi0, m0, cbuf);
  epilogue<1, 2, SILU>(a, pi0, m0, cbuf);
}

void block_1x3(const Args& a, int64_t pi0, int64_t m0, float* cbuf) {  // A 0, B 1-3, C 4-6
  _tile_zero(4);
  _tile_zero(5);
  _tile_zero(6);
  const int64_t lda = a.kp_n * 4;
  const uint32_t* x = a.xp + m0 * a.kp_n;
  const uint32_t *w0 = panel(a, pi0), *w1 = panel(a, pi0 + 1), *w2 = panel(a, pi0 + 2);
  for (int64_t kb = 0; kb < a.kp_tiles; kb += kTilePairs) {
    prefetch_tile(w0, kb);
    prefetch_tile(w1, kb);
    prefetch_tile(w2, kb);
    _tile_loadd(0, x + kb, lda);
    _tile_loadd(1, w0 + kb * kTile, 64);
    _tile_loadd(2, w1 + kb * kTile, 64);
    _tile_loadd(3, w2 + kb * kTile, 64);
    _tile_dpbf16ps(4, 0, 1);
    _tile_dpbf16ps(5, 0, 2);
    _tile_dpbf16ps(6, 0, 3);
  }
  constexpr int ld = 3 * kTile * 4;
  _tile_stored(4, cbuf, ld);
  _tile_stored(5, cbuf + kTile, ld);
  _tile_stored(6, cbuf + 2 * kTile, ld);
  finish_block<1, 3>(a, pi0, m0, cbuf);
  epilogue<1, 3, false>(a, pi0, m0, cbuf);
}

template <bool SILU>
void block_2x2(const Args& a, int64_t pi0, int64_t m0, float* cbuf) {  // A 0-1, B 2-3, C 4-7
  _tile_zero(4);
  _tile_zero(5);
  _tile_zero(6);
  _tile_zero(7);
  const int64_t lda = a.kp_n * 4;
  const uint32_t* x0 = a.xp + m0 * a.kp_n;
  const uint32_t* x1 = x0 + kTile * a.kp_n;
  const uint32_t *w0 = panel(a, pi0), *w1 = panel(a, pi0 + 1);
  for (int64_t kb = 0; kb < a.kp_tiles; kb += kTilePairs) {
    prefetch_tile(w0, kb);
    prefetch_tile(w1, kb);
    _tile_loadd(0, x0 + kb, lda);
    _tile_loadd(1, x1 + kb, lda);
    _tile_loadd(2, w0 + kb * kTile, 64);
    _tile_loadd(3, w1 + kb * kTile, 64);
    _tile_dpbf16ps(4, 0, 2);
    _tile_dpbf16ps(5, 0, 3);
    _tile_dpbf16ps(6, 1, 2);
    _tile_dpbf16ps(7, 1, 3);
  }
  constexpr int ld = 2 * kTile * 4;
  _tile_stored(4, cbuf, ld);
  _tile_stored(5, cbuf + kTile, ld);
  _tile_stored(6, cbuf + kTile * 2 * kTile, ld);
  _tile_stored(7, cbuf + kTile * 2 * kTile + kTile, ld);
  finish_block<2, 2>(a, pi0, m0, cbuf);
  epilogue<2, 2, SILU>(a, pi0, m0, cbuf);
}

// Column blocks of NB panels over the threads; in each, every row block (the
// block's weights stay in L2 between them).
template <int MB, int NB, bool SILU>
void run(const Args& a) {
  const int64_t groups = (a.panels + NB - 1) / NB;
  // B tiles: 1-2 (1x2), 1-3 (1x3), 2-3 (2x2); a single row block has only a.m rows.
  const unsigned b_tiles = MB == 2 ? 0x0Cu : NB == 3 ? 0x0Eu : 0x06u;
  const int rows = MB == 1 ? int(std::min<int64_t>(a.m, kTile)) : kTile;
#pragma omp parallel
  {
    configure_tiles(rows, b_tiles);
    alignas(64) float cbuf[MB * kTile * NB * kTile];
#pragma omp for schedule(static)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t m0 = 0; m0 < a.m; m0 += MB * kTile) {
        if constexpr (MB == 2)
          block_2x2<SILU>(a, g * NB, m0, cbuf);
        else if constexpr (NB == 3)
          block_1x3(a, g * NB, m0, cbuf);
        else
          block_1x2<SILU>(a, g * NB, m0, cbuf);
      }
    _tile_release();
  }
}

Args make_args(const float* x, const uint16_t* w, const float* bias, const float* residual, float* out, int64_t m,
               int64_t n, int64_t k, int64_t panels) {
  Args a;
  // rows above 16 padded with zeros to a whole number of 32-row blocks
  const int64_t m_pad = m <= kTile ? m : (m + 2 * kTile - 1) / (2 * kTile) * (2 * kTile);
  a.xp = pack_bf16_pairs(x, m, k, m_pad);
  a.kp_n = packed_pairs(k);
  a.kp_tiles = a.kp_n / kTilePairs * kTilePairs;
  a.w = w;
  a.panels = panels;
  a.bias = bias;
  a.residual = residual;
  a.out = out;
  a.m = m;
  a.n = n;
  return a;
}

}  // namespace

void linear_packed_amx(const float* x, const uint16_t* w, const float* bias, const float* residual, float* out,
                       int64_t m, int64_t n, int64_t k) {
  const Args a = make_args(x, w, bias, residual, out, m, n, k, (n + kTile - 1) / kTile);
  if (m <= kTile)
    run<1, 3, false>(a);
  else
    run<2, 2, false>(a);
}

void linear_silu_mul_packed_amx(const float* x, const uint16_t* w, float* out, int64_t m, int64_t inter, int64_t k) {
  const Args a = make_args(x, w, nullptr, nullptr, out, m, 2 * inter, k, 2 * inter / kTile);
  if (m <= kTile)
    run<1, 2, true>(a);
  else
    run<2, 2, true>(a);
}

}  // namespace fastdllm::cpu
