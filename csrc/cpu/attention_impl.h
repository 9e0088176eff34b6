// Attention of a ragged batch over the paged KV cache, GQA, with a per-query
// key limit (fastdllm/paged_kv.h KVBatch). Work item = (query, kv head): the K/V
// rows of one kv head are read once for all query heads of its group (K in pass
// 1, V in pass 2). Two passes over the keys (scores, then softmax-weighted V)
// with the scores in per-thread scratch; fp32 arithmetic, K/V pages in fp32 or
// bf16 (upcast on load). Plain loops and intrinsics, included by
// attention_avx2.cc and attention_avx512.cc, which compile it for their ISA
// (the head-dim loops then run 8 or 16 lanes wide); cpu::attention picks one
// at run time. A query's result depends only on its own keys, never on the
// rest of the batch, so a sequence decodes bit-identically batched or alone.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/fast_exp.h"
#include "cpu/kernels.h"
#include "cpu/load_row.h"

namespace fastdllm::cpu {

namespace ATTENTION_ISA {

// K/V elements: float, or bf16 bits (uint16_t) widened exactly on load.
inline float kv_elem(const float* p) { return *p; }
inline float kv_elem(const uint16_t* p) { return bf16_to_f32(*p); }

// One kv head's block of the page that holds slot page_idx * page_size of a
// sequence whose page list is `table`: K is stored transposed
// ([head_dim][page_size]), so that the scores of all keys of a page against
// one query are page_size-wide vector FMAs with no horizontal sums; V is
// row-major ([page_size][head_dim]).
template <class E>
inline const E* head_block(const PagedKV& kv, const int32_t* table, int64_t offset, int64_t head, int64_t page_idx) {
  return static_cast<const E*>(kv.base) + table[page_idx] * kv.page_stride + offset + head * kv.head_stride;
}

// The vector type of the ISA this file is compiled for.
#ifdef __AVX512F__
struct AVec {
  using T = __m512;
  static constexpr int W = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static T load(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T set1(float x) { return _mm512_set1_ps(x); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
};
#else
struct AVec {
  using T = __m256;
  static constexpr int W = 8;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static T load(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T set1(float x) { return _mm256_set1_ps(x); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
};
#endif

// Scores of G query heads of a group against the 16 keys of a page (K
// transposed): the G x 16 accumulators live in registers and form G
// independent FMA chains, so the loop runs at FMA throughput. out is [G][16].
constexpr int64_t kFastPage = 16;

template <int G, class E>
inline void page_scores16(const float* qg, const E* kt, int64_t hd, float* out) {
  constexpr int NV = kFastPage / AVec::W;
  typename AVec::T a[G][NV];
  for (int h = 0; h < G; ++h)
    for (int v = 0; v < NV; ++v) a[h][v] = AVec::zero();
  for (int64_t e = 0; e < hd; ++e) {
    typename AVec::T k[NV];
    for (int v = 0; v < NV; ++v) k[v] = AVec::load(kt + e * kFastPage + v * AVec::W);
    for (int h = 0; h < G; ++h) {
      const typename AVec::T qb = AVec::set1(qg[h * hd + e]);
      for (int v = 0; v < NV; ++v) a[h][v] = AVec::fma(qb, k[v], a[h][v]);
    }
  }
  for (int h = 0; h < G; ++h)
    for (int v = 0; v < NV; ++v) AVec::store(out + h * kFastPage + v * AVec::W, a[h][v]);
}

// Heads are taken in chunks of up to kMaxG: as many accumulator chains as the
// registers hold (AVX-512: 8 x 1 zmm; AVX2: 6 x 2 ymm), since with fewer the
// loop waits on FMA latency.
constexpr int64_t kMaxG = AVec::W == 16 ? 8 : 6;

template <class E>
inline void group_page_scores(const float* qg, const E* kt, int64_t hd, int64_t group, float* out) {
  for (int64_t h = 0; h < group; h += kMaxG) {
    const float* q = qg + h * hd;
    float* o = out + h * kFastPage;
    switch (std::min(kMaxG, group - h)) {
      case 8: page_scores16<8>(q, kt, hd, o); break;
      case 7: page_scores16<7>(q, kt, hd, o); break;
      case 6: page_scores16<6>(q, kt, hd, o); break;
      case 5: page_scores16<5>(q, kt, hd, o); break;
      case 4: page_scores16<4>(q, kt, hd, o); break;
      case 3: page_scores16<3>(q, kt, hd, o); break;
      case 2: page_scores16<2>(q, kt, hd, o); break;
      default: page_scores16<1>(q, kt, hd, o); break;
    }
  }
}

template <class E>
inline void page_scores_any(const float* qh, const E* kt, int64_t hd, int64_t ps, float* out) {
  for (int64_t r = 0; r < ps; ++r) out[r] = 0.f;
  for (int64_t e = 0; e < hd; ++e) {
    const float qe = qh[e];
    const E* ke = kt + e * ps;
    for (int64_t r = 0; r < ps; ++r) out[r] += qe * kv_elem(ke + r);
  }
}

// og[h][e] = sum_j p[h][j] v_j[e] for the G heads of a group (p rows of
// length limit, stride limit). The head dim goes in chunks of two vectors, the
// G x 2 accumulators stay in registers, and each V row is loaded once for all
// G heads. Per output element the sum runs over j in order, as a per-head loop
// would.
template <int G, class E>
inline void group_pv_heads(const float* p, int64_t limit, const PagedKV& kv, const int32_t* table, int64_t g,
                           int64_t hd, float* og) {
  constexpr int64_t kChunk = 2 * AVec::W;
  const int64_t ps = kv.page_size;
  int64_t e0 = 0;
  for (; e0 + kChunk <= hd; e0 += kChunk) {
    typename AVec::T a[G][2];
    for (int h = 0; h < G; ++h) a[h][0] = a[h][1] = AVec::zero();
    for (int64_t p0 = 0; p0 < limit; p0 += ps) {  // page by page: no division per key
      const E* vp = head_block<E>(kv, table, kv.v_offset, g, p0 / ps) + e0;
      const int64_t rows = std::min(ps, limit - p0);
      for (int64_t r = 0; r < rows; ++r) {
        const typename AVec::T v0 = AVec::load(vp + r * hd), v1 = AVec::load(vp + r * hd + AVec::W);
        for (int h = 0; h < G; ++h) {
          const typename AVec::T pb = AVec::set1(p[h * limit + p0 + r]);
          a[h][0] = AVec::fma(pb, v0, a[h][0]);
          a[h][1] = AVec::fma(pb, v1, a[h][1]);
        }
      }
    }
    for (int h = 0; h < G; ++h) {
      AVec::store(og + h * hd + e0, a[h][0]);
      AVec::store(og + h * hd + e0 + AVec::W, a[h][1]);
    }
  }
  if (e0 == hd) return;
  for (int h = 0; h < G; ++h) {  // head-dim tail
    float* o = og + h * hd;
    for (int64_t e = e0; e < hd; ++e) o[e] = 0.f;
    for (int64_t j = 0; j < limit; ++j) {
      const float pj = p[h * limit + j];
      const E* vr = head_block<E>(kv, table, kv.v_offset, g, j / ps) + (j % ps) * hd;
      for (int64_t e = e0; e < hd; ++e) o[e] += pj * kv_elem(vr + e);
    }
  }
}

template <class E>
inline void group_pv(const float* p, int64_t limit, const PagedKV& kv, const int32_t* table, int64_t g, int64_t hd,
                     int64_t group, float* og) {
  for (int64_t h = 0; h < group; h += kMaxG) {
    const float* ph = p + h * limit;
    float* o = og + h * hd;
    switch (std::min(kMaxG, group - h)) {
      case 8: group_pv_heads<8, E>(ph, limit, kv, table, g, hd, o); break;
      case 7: group_pv_heads<7, E>(ph, limit, kv, table, g, hd, o); break;
      case 6: group_pv_heads<6, E>(ph, limit, kv, table, g, hd, o); break;
      case 5: group_pv_heads<5, E>(ph, limit, kv, table, g, hd, o); break;
      case 4: group_pv_heads<4, E>(ph, limit, kv, table, g, hd, o); break;
      case 3: group_pv_heads<3, E>(ph, limit, kv, table, g, hd, o); break;
      case 2: group_pv_heads<2, E>(ph, limit, kv, table, g, hd, o); break;
      default: group_pv_heads<1, E>(ph, limit, kv, table, g, hd, o); break;
    }
  }
}

template <class E>
void attention_typed(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale, float* out) {
  const int64_t hd = kv.head_dim, nkv = kv.num_kv_heads, group = heads / nkv, n = b.num_tokens;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  int64_t work = 0;
  for (int64_t i = 0; i < n; ++i) work += std::max<int32_t>(b.kv_limit[i], 0);
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (work * heads * hd > 65536)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t g = 0; g < nkv; ++g) {
      const int32_t* table = b.kv_indices + b.kv_indptr[b.token_seq[i]];
      const int64_t limit = std::max<int32_t>(b.kv_limit[i], 0);
      const int64_t ps = kv.page_size;
      float* scores = scratch_floats(group * (limit > 0 ? limit : 1), 0);
      float* acc = scratch_floats(std::max(hd, group * ps), 1);
      const float* qg = q + (i * heads + g * group) * hd;  // the group's query heads, [group][hd]
      // Pass 1, page by page: acc[h][r] = q_h . k_r over the page's transposed K.
      for (int64_t p0 = 0; p0 < limit; p0 += ps) {
        const E* kt = head_block<E>(kv, table, kv.k_offset, g, p0 / ps);
        if (ps == kFastPage)
          group_page_scores(qg, kt, hd, group, acc);
        else
          for (int64_t h = 0; h < group; ++h) page_scores_any(qg + h * hd, kt, hd, ps, acc + h * ps);
        const int64_t rows = std::min(ps, limit - p0);  // rows past the limit may hold stale data
        for (int64_t h = 0; h < group; ++h)
          for (int64_t r = 0; r < rows; ++r) scores[h * limit + p0 + r] = acc[h * ps + r] * scale;
      }
      // Pass 2: per head the softmax (score rows become probabilities, inv[h] =
      // 1/sum, 0 for a query that sees no key), then the weighted sum of V for
      // all heads of the group at once, so that each V row is loaded once per
      // group instead of once per head.
      float* inv = acc;  // acc (>= group floats) is free after pass 1
      for (int64_t h = 0; h < group; ++h) {
        float* sc = scores + h * limit;
        float mx = neg_inf;
#pragma omp simd reduction(max : mx)
        for (int64_t j = 0; j < limit; ++j) mx = sc[j] > mx ? sc[j] : mx;
        if (limit == 0) {
          inv[h] = 0.f;
          continue;
        }
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < limit; ++j) {
          sc[j] = fast_exp(sc[j] - mx);
          sum += sc[j];
        }
        inv[h] = 1.0f / sum;
      }
      float* og = out + (i * heads + g * group) * hd;  // the group's output rows, [group][hd]
      group_pv<E>(scores, limit, kv, table, g, hd, group, og);
      for (int64_t h = 0; h < group; ++h)
        for (int64_t e = 0; e < hd; ++e) og[h * hd + e] *= inv[h];
    }
}

void attention_impl(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale, float* out) {
  if (kv.dtype == DType::BF16)
    attention_typed<uint16_t>(q, heads, kv, b, scale, out);
  else
    attention_typed<float>(q, heads, kv, b, scale, out);
}

}  // namespace ATTENTION_ISA
}  // namespace fastdllm::cpu
