// Appending to the KV cache on the CPU (K transposed inside a page, see
// fastdllm/paged_kv.h): kv_write copies ready k/v rows; qkv_rope_append makes
// one pass per token over the fused QKV row: RoPE on q into q_out, RoPE on k
// and the copy of v straight into the token's slot of its sequence's pages
// (fp32, or rounded to bf16 pages). Same cos/sin as cpu::rope.
#include <cmath>

#include "cpu/kernels.h"
#include "cpu/load_row.h"

namespace fastdllm::cpu {

namespace {

inline void put(float* dst, float v) { *dst = v; }
inline void put(uint16_t* dst, float v) { *dst = f32_to_bf16(v); }

// Where batch token t's K and V go, for kv head 0 (head h adds h * head_stride);
// k is null when the token's sequence writes nothing.
template <class E>
struct Slot {
  E* k = nullptr;   // the page's K, [hd][page_size]: the token's column is `row`
  E* v = nullptr;   // the token's V row
  int64_t row = 0;  // the slot's row in its page
};

template <class E>
Slot<E> token_slot(const PagedKV& kv, const KVBatch& b, int64_t t) {
  const int32_t s = b.token_seq[t];
  if (b.write_offset[s] < 0) return {};
  const int64_t slot = b.write_offset[s] + (t - b.qo_indptr[s]), row = slot % kv.page_size;
  E* page = static_cast<E*>(kv.base) + b.kv_indices[b.kv_indptr[s] + slot / kv.page_size] * kv.page_stride;
  return {page + kv.k_offset, page + kv.v_offset + row * kv.head_dim, row};
}

template <class E>
void kv_write_typed(const PagedKV& kv, const KVBatch& b, const float* k, const float* v) {
  const int64_t hd = kv.head_dim, nkv = kv.num_kv_heads, ps = kv.page_size;
  for (int64_t t = 0; t < b.num_tokens; ++t) {
    const Slot<E> slot = token_slot<E>(kv, b, t);
    if (!slot.k) continue;
    const int64_t r = slot.row;
    for (int64_t h = 0; h < nkv; ++h) {
      E* kt = slot.k + h * kv.head_stride;  // [hd][ps]
      E* vd = slot.v + h * kv.head_stride;
      const float* ks = k + (t * nkv + h) * hd;
      const float* vs = v + (t * nkv + h) * hd;
      for (int64_t i = 0; i < hd; ++i) {
        put(kt + i * ps + r, ks[i]);
        put(vd + i, vs[i]);
      }
    }
  }
}

template <class E>
void qkv_rope_append_typed(const float* qkv, int64_t heads, const float* inv_freq, const PagedKV& kv,
                           const KVBatch& b, float* q_out) {
  const int64_t hd = kv.head_dim, half = hd / 2, nkv = kv.num_kv_heads, ps = kv.page_size;
  const int64_t row_len = (heads + 2 * nkv) * hd, len = b.num_tokens;
#pragma omp parallel if (len * row_len > 32768)
  {
    float* cs = scratch_floats(2 * half);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < len; ++t) {
      rope_cos_sin(b.positions[t], inv_freq, half, cs);
      const float* row = qkv + t * row_len;
      for (int64_t h = 0; h < heads; ++h) {
        const float* src = row + h * hd;
        float* dst = q_out + (t * heads + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          dst[i] = src[i] * cs[i] - src[half + i] * cs[half + i];
          dst[half + i] = src[half + i] * cs[i] + src[i] * cs[half + i];
        }
      }
      const Slot<E> slot = token_slot<E>(kv, b, t);
      const int64_t r = slot.row;
      for (int64_t h = 0; slot.k && h < nkv; ++h) {
        E* kt = slot.k + h * kv.head_stride;  // [hd][ps]
        E* vd = slot.v + h * kv.head_stride;
        const float* k = row + (heads + h) * hd;
        const float* v = row + (heads + nkv + h) * hd;
        for (int64_t i = 0; i < half; ++i) {
          put(kt + i * ps + r, k[i] * cs[i] - k[half + i] * cs[half + i]);
          put(kt + (half + i) * ps + r, k[half + i] * cs[i] + k[i] * cs[half + i]);
        }
        for (int64_t i = 0; i < hd; ++i) put(vd + i, v[i]);
      }
    }
  }
}

}  // namespace

void kv_write(const PagedKV& kv, const KVBatch& b, const float* k, const float* v) {
  if (kv.dtype == DType::BF16)
    kv_write_typed<uint16_t>(kv, b, k, v);
  else
    kv_write_typed<float>(kv, b, k, v);
}

void qkv_rope_append(const float* qkv, int64_t heads, const float* inv_freq, const PagedKV& kv, const KVBatch& b,
                     float* q_out) {
  if (kv.dtype == DType::BF16)
    qkv_rope_append_typed<uint16_t>(qkv, heads, inv_freq, kv, b, q_out);
  else
    qkv_rope_append_typed<float>(qkv, heads, inv_freq, kv, b, q_out);
}

}  // namespace fastdllm::cpu
