// Writes into the paged KV cache on the GPU: the fused QKV split + RoPE +
// append that follows the QKV projection, and the plain K/V write.
//
// Layout (fastdllm/ops.h PagedKV): per page and kv head a block of page_size
// rows; V row-major [row][head_dim], K transposed [head_dim][row] (one layout for
// both backends; the attention kernel stages K tiles through shared memory, so
// the transpose costs it nothing). One block per (token, head slot); limits:
// none beyond int64 indexing.
#include <cfloat>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "fastdllm/error.h"

namespace fastdllm::cuda {

namespace {

__global__ void kv_write_kernel(PagedKV kv, const float* k, const float* v, int64_t start) {
  const int64_t t = blockIdx.x / kv.num_kv_heads, h = blockIdx.x % kv.num_kv_heads;
  const int64_t pos = start + t, row = pos % kv.page_size, hd = kv.head_dim;
  float* kt = const_cast<float*>(head_block(kv, kv.k_offset, h, pos / kv.page_size));
  float* vd = const_cast<float*>(head_block(kv, kv.v_offset, h, pos / kv.page_size)) + row * hd;
  for (int64_t e = threadIdx.x; e < hd; e += blockDim.x) {
    kt[e * kv.page_size + row] = k[(t * kv.num_kv_heads + h) * hd + e];
    vd[e] = v[(t * kv.num_kv_heads + h) * hd + e];
  }
}

// One block per (token, head slot): slots [0, heads) are query heads (RoPE into
// q_out), slots [heads, heads + kv_heads) are kv heads (RoPE on k, both k and v
// written into the page).
__global__ void qkv_rope_append_kernel(const float* qkv, int64_t heads, const int32_t* positions,
                                       const float* inv_freq, PagedKV kv, int64_t start, float* q_out) {
  const int64_t nkv = kv.num_kv_heads, hd = kv.head_dim, half = hd / 2;
  const int64_t slots = heads + nkv;
  const int64_t t = blockIdx.x / slots, h = blockIdx.x % slots;
  const float* row = qkv + t * (heads + 2 * nkv) * hd;
  const int64_t tok = start == ops::kSlotsFromPositions ? positions[t] : start + t, r = tok % kv.page_size;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    sincosf(float(positions[t]) * inv_freq[i], &s, &c);
    const float* x = row + h * hd;
    const float a = x[i], b = x[half + i];
    const float lo = a * c - b * s, hi = b * c + a * s;
    if (h < heads) {
      q_out[(t * heads + h) * hd + i] = lo;
      q_out[(t * heads + h) * hd + half + i] = hi;
    } else {
      const int64_t g = h - heads;
      float* kt = const_cast<float*>(head_block(kv, kv.k_offset, g, tok / kv.page_size));
      kt[i * kv.page_size + r] = lo;
      kt[(half + i) * kv.page_size + r] = hi;
    }
  }
  if (h >= heads) {
    const int64_t g = h - heads;
    const float* v = row + (heads + nkv + g) * hd;
    float* vd = const_cast<float*>(head_block(kv, kv.v_offset, g, tok / kv.page_size)) + r * hd;
    for (int64_t e = threadIdx.x; e < hd; e += blockDim.x) vd[e] = v[e];
  }
}

}  // namespace

void qkv_rope_append(const float* qkv, int64_t len, int64_t heads, const int32_t* positions, const float* inv_freq,
                     const PagedKV& kv, int64_t start, float* q_out) {
  if (len == 0) return;
  qkv_rope_append_kernel<<<unsigned(len * (heads + kv.num_kv_heads)), 64, 0, stream()>>>(qkv, heads, positions, inv_freq, kv,
                                                                           start, q_out);
  check_launch("qkv_rope_append");
}

void kv_write(const PagedKV& kv, const float* k, const float* v, int64_t len, int64_t start) {
  if (len == 0) return;
  kv_write_kernel<<<unsigned(len * kv.num_kv_heads), 128, 0, stream()>>>(kv, k, v, start);
  check_launch("kv_write");
}

}  // namespace fastdllm::cuda
