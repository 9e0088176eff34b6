// Attention of a ragged batch over bf16 KV pages with AMX tiles (cpu::attention
// picks it on AMX CPUs for bf16 pages of 16 tokens and head_dim a multiple of
// 32, at most 128; everything else runs attention_impl.h).
//
// Per sequence and kv head the rows are (query, query head of the GQA group)
// pairs, 16 to a tile, so one K/V tile serves a whole group at once:
//   1. the sequence's K and V (up to its longest key limit) are rearranged once
//      into the B-operand layouts of TDPBF16PS: K^T as [page][dim pair][key]
//      words (the page stores K transposed, [dim][key]: interleaving two dim
//      rows gives the pairs) and V as [32-key block][16-dim block][key pair][dim]
//      words (interleaving two key rows of the row-major V);
//   2. per row tile: S = Q K^T (Q rounded to bf16), then in fp32 the scale, the
//      row's key limit and the softmax, P rounded to bf16, O = P V, O / sum.
// Numerics: as PyTorch's bf16 SDPA, the two products take bf16 inputs with fp32
// accumulation (tests/test_ops.py bounds the difference to the fp32 kernel).
// A row depends on its own query and keys only (keys past its limit enter as
// exact zeros of P), so a sequence's result does not depend on the batch.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/amx_tiles.h"
#include "cpu/fast_exp.h"
#include "cpu/kernels.h"
#include "cpu/load_row.h"

namespace fastdllm::cpu {

namespace {

constexpr int kTile = amx::kTileRows;

void configure_tiles() {
  const uint8_t tile_rows[8] = {kTile, kTile, kTile, kTile, kTile, kTile, kTile, kTile};
  amx::load_tile_config(tile_rows);
}

// 16 bf16 of a and 16 of b -> 16 words (a[i] low, b[i] high).
inline __m512i interleave16(const uint16_t* a, const uint16_t* b) {
  const __m512i idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37,
                                       5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  const __m512i va = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
  const __m512i vb = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
  return _mm512_permutex2var_epi16(va, idx, vb);
}

struct SeqPlan {
  int32_t seq;
  int32_t q0, nq;     // batch tokens of the sequence
  int32_t kmax;       // its longest key limit
  int64_t k_at, v_at; // offsets (words) of its kv head 0 in the K / V scratch
  int64_t k_words, v_words;  // per kv head
};

}  // namespace

void attention_amx(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale, float* out) {
  const int64_t hd = kv.head_dim, nkv = kv.num_kv_heads, group = heads / nkv, pairs = hd / 2;
  const int64_t ktiles = hd / 32;  // A tiles of Q: 16 dim pairs each
  // ---- the plan: sequences with queries, scratch offsets ----
  thread_local std::vector<SeqPlan> plan;
  thread_local std::vector<uint32_t> kbuf, vbuf;
  plan.clear();
  int64_t k_total = 0, v_total = 0;
  for (int s = 0; s < b.num_seqs; ++s) {
    const int32_t q0 = b.qo_indptr[s], q1 = b.qo_indptr[s + 1];
    if (q1 <= q0) continue;
    int32_t kmax = 0;
    for (int32_t t = q0; t < q1; ++t) kmax = std::max(kmax, b.kv_limit[t]);
    SeqPlan p{s, q0, q1 - q0, kmax, k_total, v_total, 0, 0};
    const int64_t pages = (kmax + kTile - 1) / kTile, kblocks = (kmax + 2 * kTile - 1) / (2 * kTile);
    p.k_words = pages * pairs * kTile;        // [page][pair][key]
    p.v_words = kblocks * hd * kTile;         // [32-key block][dim block][key pair][dim]
    k_total += nkv * p.k_words;
    v_total += nkv * p.v_words;
    plan.push_back(p);
  }
  if (plan.empty()) return;
  if (int64_t(kbuf.size()) < k_total) kbuf.resize(size_t(k_total));
  if (int64_t(vbuf.size()) < v_total) vbuf.resize(size_t(v_total));
  uint32_t* const kb_all = kbuf.data();
  uint32_t* const vb_all = vbuf.data();
  const SeqPlan* const plans = plan.data();
  const int64_t nplan = int64_t(plan.size());
  const uint16_t* base = static_cast<const uint16_t*>(kv.base);

  // ---- pass 1: K^T and V into the B layouts, per (sequence, kv head, 32-key block) ----
  struct Item {
    int32_t p, g, kb;
  };
  thread_local std::vector<Item> items;  // kept: no allocation per forward once warm
  items.clear();
  for (int64_t i = 0; i < nplan; ++i)
    for (int64_t g = 0; g < nkv; ++g)
      for (int32_t kb = 0; kb < (plans[i].kmax + 31) / 32; ++kb) items.push_back({int32_t(i), int32_t(g), kb});
  const Item* const item = items.data();
  const int64_t nitems = int64_t(items.size());
#pragma omp parallel for schedule(static) if (nitems > 8)
  for (int64_t it = 0; it < nitems; ++it) {
    const SeqPlan& p = plans[item[it].p];
    const int64_t g = item[it].g, kb = item[it].kb;
    const int32_t* table = b.kv_indices + b.kv_indptr[p.seq];
    uint32_t* kdst = kb_all + p.k_at + g * p.k_words;
    uint32_t* vdst = vb_all + p.v_at + g * p.v_words + kb * hd * kTile;
    const int64_t pages = (p.kmax + kTile - 1) / kTile;
    alignas(64) uint16_t zero[kTile] = {};
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t page = 2 * kb + half;
      if (page >= pages) break;
      const uint16_t* kt = base + table[page] * kv.page_stride + kv.k_offset + g * kv.head_stride;  // [hd][16]
      uint32_t* kd = kdst + page * pairs * kTile;
      for (int64_t pr = 0; pr < pairs; ++pr)
        _mm512_storeu_si512(kd + pr * kTile, interleave16(kt + 2 * pr * kTile, kt + (2 * pr + 1) * kTile));
      // keys past kmax in the last page hold stale data: zero them (their P is 0, but 0 * NaN is not)
      const int64_t valid = std::min<int64_t>(kTile, p.kmax - page * kTile);
      if (valid < kTile)
        for (int64_t pr = 0; pr < pairs; ++pr) std::memset(kd + pr * kTile + valid, 0, size_t(kTile - valid) * 4);
    }
    // V: 32 keys = 16 key pairs x (hd / 16) dim blocks; pair j = keys 2j, 2j+1 of the block
    for (int64_t j = 0; j < kTile; ++j) {
      const int64_t k0 = kb * 32 + 2 * j, k1 = k0 + 1;
      auto vrow = [&](int64_t key) -> const uint16_t* {
        if (key >= p.kmax) return nullptr;
        return base + table[key / kTile] * kv.page_stride + kv.v_offset + g * kv.head_stride + (key % kTile) * hd;
      };
      const uint16_t *r0 = vrow(k0), *r1 = vrow(k1);
      for (int64_t db = 0; db < hd / kTile; ++db) {
        const uint16_t* a = r0 ? r0 + db * kTile : zero;
        const uint16_t* c = r1 ? r1 + db * kTile : zero;
        _mm512_storeu_si512(vdst + db * kTile * kTile + j * kTile, interleave16(a, c));
      }
    }
  }

  // ---- pass 2: per (sequence, kv head, tile of 16 rows) ----
  struct Work {
    int32_t p, g, r0;
  };
  thread_local std::vector<Work> work;
  work.clear();
  for (int64_t i = 0; i < nplan; ++i)
    for (int64_t g = 0; g < nkv; ++g)
      for (int32_t r0 = 0; r0 < plans[i].nq * group; r0 += kTile) work.push_back({int32_t(i), int32_t(g), r0});
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const Work* const works = work.data();
  const int64_t nwork = int64_t(work.size());
#pragma omp parallel if (nwork > 1)
  {
    configure_tiles();
#pragma omp for schedule(dynamic, 1)
    for (int64_t wi = 0; wi < nwork; ++wi) {
      const SeqPlan& p = plans[works[wi].p];
      const int64_t g = works[wi].g, r0 = works[wi].r0;
      const int64_t rows = std::min<int64_t>(kTile, p.nq * group - r0);
      int64_t limit[kTile];
      int64_t kend = 0;
      for (int64_t r = 0; r < kTile; ++r) {
        limit[r] = r < rows ? b.kv_limit[p.q0 + (r0 + r) / group] : 0;
        kend = std::max(kend, limit[r]);
      }
      const int64_t pages = (kend + kTile - 1) / kTile, kblocks = (kend + 31) / 32, kpad = kblocks * 32;
      // Q rows as bf16 pairs [16][pairs]; rows past the tile's end are zero.
      uint32_t* qa = reinterpret_cast<uint32_t*>(scratch_floats(kTile * pairs + kTile * (kpad + kpad / 2 + hd), 0));
      float* sbuf = reinterpret_cast<float*>(qa + kTile * pairs);  // [16][kpad]
      uint32_t* pa = reinterpret_cast<uint32_t*>(sbuf + kTile * kpad);  // [16][kpad / 2]
      float* obuf = reinterpret_cast<float*>(pa + kTile * kpad / 2);   // [16][hd]
      for (int64_t r = 0; r < kTile; ++r) {
        uint32_t* d = qa + r * pairs;
        if (r >= rows) {
          std::memset(d, 0, size_t(pairs) * 4);
          continue;
        }
        const int64_t t = p.q0 + (r0 + r) / group, h = g * group + (r0 + r) % group;
        const float* qr = q + (t * heads + h) * hd;
        for (int64_t c = 0; c < hd; c += 32) {
          const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(qr + c + 16), _mm512_loadu_ps(qr + c));
          _mm512_storeu_si512(d + c / 2, (__m512i)v);
        }
      }
      // S = Q K^T, a page (16 keys) at a time: Q tiles 0..ktiles-1, B 4, C 5.
      const uint32_t* kg = kb_all + p.k_at + g * p.k_words;
      for (int64_t kt = 0; kt < ktiles; ++kt) {
        switch (kt) {  // tile numbers are immediates
          case 0: _tile_loadd(0, qa, pairs * 4); break;
          case 1: _tile_loadd(1, qa + 16, pairs * 4); break;
          case 2: _tile_loadd(2, qa + 32, pairs * 4); break;
          default: _tile_loadd(3, qa + 48, pairs * 4); break;
        }
      }
      for (int64_t pg = 0; pg < pages; ++pg) {
        const uint32_t* kp = kg + pg * pairs * kTile;
        _tile_zero(5);
        _tile_loadd(4, kp, 64);
        _tile_dpbf16ps(5, 0, 4);
        if (ktiles > 1) {
          _tile_loadd(4, kp + 16 * kTile, 64);
          _tile_dpbf16ps(5, 1, 4);
        }
        if (ktiles > 2) {
          _tile_loadd(4, kp + 32 * kTile, 64);
          _tile_dpbf16ps(5, 2, 4);
        }
        if (ktiles > 3) {
          _tile_loadd(4, kp + 48 * kTile, 64);
          _tile_dpbf16ps(5, 3, 4);
        }
        _tile_stored(5, sbuf + pg * kTile, kpad * 4);
      }
      // The softmax per row in fp32, P as bf16 pairs (zero past the row's limit).
      float inv[kTile];
      for (int64_t r = 0; r < kTile; ++r) {
        float* sr = sbuf + r * kpad;
        const int64_t lim = limit[r];
        float mx = neg_inf;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < lim; ++j) {
          const float v = sr[j] * scale;
          sr[j] = v;
          mx = v > mx ? v : mx;
        }
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < lim; ++j) {
          sr[j] = fast_exp(sr[j] - mx);
          sum += sr[j];
        }
        for (int64_t j = lim; j < kpad; ++j) sr[j] = 0.f;
        inv[r] = lim > 0 ? 1.0f / sum : 0.f;
        uint32_t* pr = pa + r * (kpad / 2);
        for (int64_t j = 0; j < kpad; j += 32) {
          const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(sr + j + 16), _mm512_loadu_ps(sr + j));
          _mm512_storeu_si512(pr + j / 2, (__m512i)v);
        }
      }
      // O = P V, 4 dim blocks (C 4-7) at a time: P tile 0, V tiles 1-2.
      const uint32_t* vg = vb_all + p.v_at + g * p.v_words;
      for (int64_t db0 = 0; db0 < hd / kTile; db0 += 4) {
        const int64_t nd = std::min<int64_t>(4, hd / kTile - db0);
        _tile_zero(4);
        _tile_zero(5);
        _tile_zero(6);
        _tile_zero(7);
        for (int64_t kb = 0; kb < kblocks; ++kb) {
          _tile_loadd(0, pa + kb * kTile, kpad / 2 * 4);
          const uint32_t* vt = vg + kb * hd * kTile + db0 * kTile * kTile;
          _tile_loadd(1, vt, 64);
          _tile_dpbf16ps(4, 0, 1);
          if (nd > 1) {
            _tile_loadd(2, vt + kTile * kTile, 64);
            _tile_dpbf16ps(5, 0, 2);
          }
          if (nd > 2) {
            _tile_loadd(1, vt + 2 * kTile * kTile, 64);
            _tile_dpbf16ps(6, 0, 1);
          }
          if (nd > 3) {
            _tile_loadd(2, vt + 3 * kTile * kTile, 64);
            _tile_dpbf16ps(7, 0, 2);
          }
        }
        _tile_stored(4, obuf + db0 * kTile, hd * 4);
        if (nd > 1) _tile_stored(5, obuf + (db0 + 1) * kTile, hd * 4);
        if (nd > 2) _tile_stored(6, obuf + (db0 + 2) * kTile, hd * 4);
        if (nd > 3) _tile_stored(7, obuf + (db0 + 3) * kTile, hd * 4);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = p.q0 + (r0 + r) / group, h = g * group + (r0 + r) % group;
        float* o = out + (t * heads + h) * hd;
        for (int64_t e = 0; e < hd; ++e) o[e] = obuf[r * hd + e] * inv[r];
      }
    }
    _tile_release();
  }
}

}  // namespace fastdllm::cpu
