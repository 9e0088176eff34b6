// Writes into the paged KV cache on the GPU: the fused QKV split + RoPE +
// append that follows the QKV projection, and the plain K/V write, for every
// token of a ragged batch into its own sequence's pages.
//
// Layout (fastdllm/paged_kv.h PagedKV): per page and kv head a block of
// page_size rows; V row-major [row][head_dim], K transposed [head_dim][row]
// (one layout for both backends; the attention kernel stages K tiles through
// shared memory, so the transpose costs it nothing); fp32 or bf16 elements
// (rounded to nearest even). Token t of sequence s goes to slot write_offset[s]
// + (t - qo_indptr[s]); a sequence with write_offset -1 (padding) writes
// nothing. One block per (token, head slot); limits: none beyond int64 indexing.
#include <cfloat>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "fastdllm/error.h"

namespace fastdllm::cuda {

namespace {

// The page-table row and slot of batch token t; false when it writes nothing.
__device__ __forceinline__ bool token_slot(const KVBatch& b, int64_t t, const int32_t** table, int64_t* slot) {
  const int32_t s = b.token_seq[t];
  const int32_t wo = b.write_offset[s];
  if (wo < 0) return false;
  *table = b.kv_indices + b.kv_indptr[s];
  *slot = wo + (t - b.qo_indptr[s]);
  return true;
}

template <class E>
__global__ void kv_write_kernel(PagedKV kv, KVBatch b, const float* k, const float* v) {
  const int64_t t = blockIdx.x / kv.num_kv_heads, h = blockIdx.x % kv.num_kv_heads;
  const int32_t* table;
  int64_t slot;
  if (!token_slot(b, t, &table, &slot)) return;
  const int64_t row = slot % kv.page_size, hd = kv.head_dim;
  E* kt = head_block<E>(kv, table, kv.k_offset, h, slot / kv.page_size);
  E* vd = head_block<E>(kv, table, kv.v_offset, h, slot / kv.page_size) + row * hd;
  for (int64_t e = threadIdx.x; e < hd; e += blockDim.x) {
    store_as(kt + e * kv.page_size + row, k[(t * kv.num_kv_heads + h) * hd + e]);
    store_as(vd + e, v[(t * kv.num_kv_heads + h) * hd + e]);
  }
}

// One block per (token, head slot): slots [0, heads) are query heads (RoPE into
// q_out), slots [heads, heads + kv_heads) are kv heads (RoPE on k, both k and v
// written into the page).
template <class E>
__global__ void qkv_rope_append_kernel(const float* qkv, int64_t heads, const float* inv_freq, PagedKV kv, KVBatch b,
                                       float* q_out) {
  const int64_t nkv = kv.num_kv_heads, hd = kv.head_dim, half = hd / 2;
  const int64_t slots = heads + nkv;
  const int64_t t = blockIdx.x / slots, h = blockIdx.x % slots;
  const float* row = qkv + t * (heads + 2 * nkv) * hd;
  const int32_t* table = nullptr;
  int64_t slot = 0;
  const bool write = h >= heads && token_slot(b, t, &table, &slot);
  if (h >= heads && !write) return;
  const int64_t r = slot % kv.page_size, g = h - heads;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    float s, c;
    sincosf(float(b.positions[t]) * inv_freq[i], &s, &c);
    const float* x = row + h * hd;
    const float a = x[i], bb = x[half + i];
    const float lo = a * c - bb * s, hi = bb * c + a * s;
    if (h < heads) {
      q_out[(t * heads + h) * hd + i] = lo;
      q_out[(t * heads + h) * hd + half + i] = hi;
    } else {
      E* kt = head_block<E>(kv, table, kv.k_offset, g, slot / kv.page_size);
      store_as(kt + i * kv.page_size + r, lo);
      store_as(kt + (half + i) * kv.page_size + r, hi);
    }
  }
  if (write) {
    const float* v = row + (heads + nkv + g) * hd;
    E* vd = head_block<E>(kv, table, kv.v_offset, g, slot / kv.page_size) + r * hd;
    for (int64_t e = threadIdx.x; e < hd; e += blockDim.x) store_as(vd + e, v[e]);
  }
}

}  // namespace

void qkv_rope_append(const float* qkv, int64_t heads, const float* inv_freq, const PagedKV& kv, const KVBatch& b,
                     float* q_out) {
  if (b.num_tokens == 0) return;
  by_kv_dtype(kv.dtype, [&](auto z) {
    using E = decltype(z);
    qkv_rope_append_kernel<E><<<unsigned(b.num_tokens * (heads + kv.num_kv_heads)), 64, 0, stream()>>>(
        qkv, heads, inv_freq, kv, b, q_out);
  });
  check_launch("qkv_rope_append");
}

void kv_write(const PagedKV& kv, const KVBatch& b, const float* k, const float* v) {
  if (b.num_tokens == 0) return;
  by_kv_dtype(kv.dtype, [&](auto z) {
    using E = decltype(z);
    kv_write_kernel<E><<<unsigned(b.num_tokens * kv.num_kv_heads), 128, 0, stream()>>>(kv, b, k, v);
  });
  check_launch("kv_write");
}

}  // namespace fastdllm::cuda
