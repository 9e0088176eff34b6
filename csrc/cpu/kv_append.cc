// Appending to the KV cache on the CPU (K transposed inside a page, see PagedKV):
// kv_write copies ready k/v rows; qkv_rope_append makes one pass per token over
// the fused QKV row: RoPE on q into q_out, RoPE on k and the copy of v straight
// into the pages. Same cos/sin as cpu::rope.
#include <cmath>

#include "cpu/kernels.h"
#include "cpu/load_row.h"

namespace fastdllm::cpu {

void kv_write(const PagedKV& kv, const float* k, const float* v, int64_t len, int64_t start) {
  const int64_t hd = kv.head_dim, nkv = kv.num_kv_heads, ps = kv.page_size;
#pragma omp parallel for schedule(static) if (len * nkv * hd > 65536)
  for (int64_t t = 0; t < len; ++t) {
    const int64_t tok = start + t, r = tok % ps;
    const int64_t page = kv.page_table[tok / ps];
    for (int64_t h = 0; h < nkv; ++h) {
      float* base = static_cast<float*>(kv.base) + page * kv.page_stride + h * kv.head_stride;
      float* kt = base + kv.k_offset;  // [hd][ps]
      float* vd = base + kv.v_offset + r * hd;
      const float* ks = k + (t * nkv + h) * hd;
      const float* vs = v + (t * nkv + h) * hd;
      for (int64_t i = 0; i < hd; ++i) {
        kt[i * ps + r] = ks[i];
        vd[i] = vs[i];
      }
    }
  }
}

void qkv_rope_append(const float* qkv, int64_t len, int64_t heads, const int32_t* positions, const float* inv_freq,
                     const PagedKV& kv, int64_t start, float* q_out) {
  const int64_t hd = kv.head_dim, half = hd / 2, nkv = kv.num_kv_heads, ps = kv.page_size;
  const int64_t row_len = (heads + 2 * nkv) * hd;
#pragma omp parallel if (len * row_len > 32768)
  {
    float* cs = scratch_floats(2 * half);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < len; ++t) {
      rope_cos_sin(positions[t], inv_freq, half, cs);
      const float* row = qkv + t * row_len;
      for (int64_t h = 0; h < heads; ++h) {
        const float* src = row + h * hd;
        float* dst = q_out + (t * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          dst[i] = src[i] * cs[i] - src[half + i] * cs[half + i];
          dst[half + i] = src[half + i] * cs[i] + src[i] * cs[half + i];
        }
      }
      const int64_t tok = start == ops::kSlotsFromPositions ? positions[t] : start + t, r = tok % ps;
      const int64_t page = kv.page_table[tok / ps];
      for (int64_t h = 0; h < nkv; ++h) {
        const float* k = row + (heads + h) * hd;
        const float* v = row + (heads + nkv + h) * hd;
        float* base = static_cast<float*>(kv.base) + page * kv.page_stride + h * kv.head_stride;
        float* kt = base + kv.k_offset;  // [hd][ps]
        float* vd = base + kv.v_offset + r * hd;
        for (int64_t i = 0; i < half; ++i) {
          kt[i * ps + r] = k[i] * cs[i] - k[half + i] * cs[half + i];
          kt[(half + i) * ps + r] = k[half + i] * cs[i] + k[i] * cs[half + i];
        }
        for (int64_t i = 0; i < hd; ++i) vd[i] = v[i];
      }
    }
  }
}

}  // namespace fastdllm::cpu
