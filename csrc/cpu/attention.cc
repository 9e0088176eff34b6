// Attention over a paged KV cache, GQA, with a per-query key limit and/or an
// explicit boolean mask. Work item = (query, kv head): the K/V rows of one kv
// head are read once for all query heads of its group. Two passes over the keys
// (scores, then softmax-weighted V) with the scores in per-thread scratch; fp32
// throughout.
#include <cmath>
#include <limits>

#include "cpu/kernels.h"
#include "cpu/load_row.h"

namespace fastdllm::cpu {

namespace {

inline const float* kv_row(const PagedKV& kv, int64_t offset, int64_t head, int64_t t) {
  const int64_t page = kv.page_table[t / kv.page_size];
  return static_cast<const float*>(kv.base) + page * kv.page_stride + offset +
         head * kv.head_stride + (t % kv.page_size) * kv.head_dim;
}

inline float* kv_row_mut(const PagedKV& kv, int64_t offset, int64_t head, int64_t t) {
  return const_cast<float*>(kv_row(kv, offset, head, t));
}

}  // namespace

void kv_write(const PagedKV& kv, const float* k, const float* v, int64_t len, int64_t start) {
  const int64_t hd = kv.head_dim, nkv = kv.num_kv_heads;
#pragma omp parallel for schedule(static) if (len * nkv * hd > 65536)
  for (int64_t t = 0; t < len; ++t)
    for (int64_t h = 0; h < nkv; ++h) {
      float* kd = kv_row_mut(kv, kv.k_offset, h, start + t);
      float* vd = kv_row_mut(kv, kv.v_offset, h, start + t);
      const float* ks = k + (t * nkv + h) * hd;
      const float* vs = v + (t * nkv + h) * hd;
      for (int64_t i = 0; i < hd; ++i) { kd[i] = ks[i]; vd[i] = vs[i]; }
    }
}

void attention(const float* q, int64_t len_q, int64_t heads, const PagedKV& kv, int64_t n_kv,
               float scale, const int32_t* kv_limit, const uint8_t* mask, float* out) {
  const int64_t hd = kv.head_dim, nkv = kv.num_kv_heads, group = heads / nkv;
  const float neg_inf = -std::numeric_limits<float>::infinity();
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (len_q * heads * n_kv * hd > 65536)
  for (int64_t i = 0; i < len_q; ++i)
    for (int64_t g = 0; g < nkv; ++g) {
      const int64_t limit = kv_limit ? std::min<int64_t>(kv_limit[i], n_kv) : n_kv;
      const uint8_t* mrow = mask ? mask + i * n_kv : nullptr;
      float* scores = scratch_floats(group * (limit > 0 ? limit : 1), 0);
      float* acc = scratch_floats(hd, 1);
      // Pass 1: scores of every query head of the group against each visible key.
      for (int64_t j = 0; j < limit; ++j) {
        const bool visible = !mrow || mrow[j];
        const float* kr = visible ? kv_row(kv, kv.k_offset, g, j) : nullptr;
        for (int64_t h = 0; h < group; ++h) {
          float s = neg_inf;
          if (visible) {
            const float* qr = q + (i * heads + g * group + h) * hd;
            float d = 0.f;
#pragma omp simd reduction(+ : d)
            for (int64_t e = 0; e < hd; ++e) d += qr[e] * kr[e];
            s = d * scale;
          }
          scores[h * limit + j] = s;
        }
      }
      // Pass 2: per head, softmax and the weighted sum of V.
      for (int64_t h = 0; h < group; ++h) {
        float* o = out + (i * heads + g * group + h) * hd;
        float* sc = scores + h * limit;
        float mx = neg_inf;
        for (int64_t j = 0; j < limit; ++j) mx = std::max(mx, sc[j]);
        for (int64_t e = 0; e < hd; ++e) acc[e] = 0.f;
        if (mx == neg_inf) {  // no visible key
          for (int64_t e = 0; e < hd; ++e) o[e] = 0.f;
          continue;
        }
        float sum = 0.f;
        for (int64_t j = 0; j < limit; ++j) {
          if (sc[j] == neg_inf) continue;
          const float p = std::exp(sc[j] - mx);
          sum += p;
          const float* vr = kv_row(kv, kv.v_offset, g, j);
#pragma omp simd
          for (int64_t e = 0; e < hd; ++e) acc[e] += p * vr[e];
        }
        const float inv = 1.0f / sum;
        for (int64_t e = 0; e < hd; ++e) o[e] = acc[e] * inv;
      }
    }
}

}  // namespace fastdllm::cpu
