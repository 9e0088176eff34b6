// Attention over the paged KV cache on the GPU, and the K/V append.
//
// Layout (fastdllm/ops.h PagedKV): per page and kv head a block of page_size
// rows; V row-major [row][head_dim], K transposed [head_dim][row] (the CPU
// kernel's layout; the pages are shared by both backends' code paths).
// attention: one block per (query, head), 4 warps; each warp walks a strided
// share of the visible keys with an online softmax in fp32 (running max, sum,
// and head_dim/32 output accumulators per lane), then the warps' partial
// states are merged through shared memory. Visibility = key < kv_limit[q]
// (optional) and mask[q, key] != 0 (optional); a query that sees no key gets
// zeros. No score matrix is materialised. Limits: head_dim <= 256 and a
// multiple of 32. This is the correctness-first kernel; the tiled, GQA-sharing
// block-diffusion kernel is the next step (issue "CUDA backend for Hopper").
#include <cfloat>

#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "fastdllm/error.h"

namespace fastdllm::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kMaxHeadDim = 256;

__device__ __forceinline__ const float* head_block(const PagedKV& kv, int64_t offset, int64_t head, int64_t page_idx) {
  return static_cast<const float*>(kv.base) + int64_t(kv.page_table[page_idx]) * kv.page_stride + offset +
         head * kv.head_stride;
}

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

__global__ void attention_kernel(const float* q, int64_t heads, PagedKV kv, int64_t n_kv, float scale,
                                 const int32_t* kv_limit, const uint8_t* mask, float* out) {
  constexpr int kPer = kMaxHeadDim / 32;
  __shared__ float s_m[kWarps], s_l[kWarps];
  __shared__ float s_acc[kWarps][kMaxHeadDim];
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const int64_t hd = kv.head_dim, group = heads / kv.num_kv_heads, g = h / group;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float* qh = q + (i * heads + h) * hd;
  float qr[kPer];
  for (int c = 0; c < kPer; ++c) qr[c] = (lane + 32 * c < hd) ? qh[lane + 32 * c] : 0.f;
  int64_t limit = n_kv;
  if (kv_limit && kv_limit[i] < limit) limit = kv_limit[i];
  float m = -FLT_MAX, l = 0.f, acc[kPer];
  for (int c = 0; c < kPer; ++c) acc[c] = 0.f;
  for (int64_t j = warp; j < limit; j += kWarps) {
    if (mask && !mask[i * n_kv + j]) continue;
    const float* kt = head_block(kv, kv.k_offset, g, j / kv.page_size) + j % kv.page_size;
    float d = 0.f;
    for (int c = 0; c < kPer; ++c)
      if (lane + 32 * c < hd) d += qr[c] * kt[(lane + 32 * c) * kv.page_size];
    const float s = warp_sum(d) * scale;
    const float m_new = fmaxf(m, s);
    const float corr = __expf(m - m_new), p = __expf(s - m_new);
    const float* vr = head_block(kv, kv.v_offset, g, j / kv.page_size) + (j % kv.page_size) * hd;
    for (int c = 0; c < kPer; ++c)
      if (lane + 32 * c < hd) acc[c] = acc[c] * corr + p * vr[lane + 32 * c];
    l = l * corr + p;
    m = m_new;
  }
  if (lane == 0) { s_m[warp] = m; s_l[warp] = l; }
  for (int c = 0; c < kPer; ++c)
    if (lane + 32 * c < hd) s_acc[warp][lane + 32 * c] = acc[c];
  __syncthreads();
  float M = -FLT_MAX;
  for (int w = 0; w < kWarps; ++w) M = fmaxf(M, s_m[w]);
  float L = 0.f;
  for (int w = 0; w < kWarps; ++w) L += s_l[w] * (s_l[w] > 0.f ? __expf(s_m[w] - M) : 0.f);
  float* o = out + (i * heads + h) * hd;
  for (int64_t e = threadIdx.x; e < hd; e += blockDim.x) {
    float v = 0.f;
    for (int w = 0; w < kWarps; ++w)
      if (s_l[w] > 0.f) v += s_acc[w][e] * __expf(s_m[w] - M);
    o[e] = L > 0.f ? v / L : 0.f;
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
  const int64_t tok = start + t, r = tok % kv.page_size;
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

void attention(const float* q, int64_t len_q, int64_t heads, const PagedKV& kv, int64_t n_kv, float scale,
               const int32_t* kv_limit, const uint8_t* mask, float* out) {
  FDL_CHECK(kv.head_dim % 32 == 0 && kv.head_dim <= kMaxHeadDim, "attention on CUDA: head_dim ", kv.head_dim,
            " must be a multiple of 32 and at most ", kMaxHeadDim);
  if (len_q == 0) return;
  attention_kernel<<<dim3(unsigned(len_q), unsigned(heads)), 32 * kWarps, 0, stream()>>>(q, heads, kv, n_kv, scale, kv_limit,
                                                                              mask, out);
  check_launch("attention");
}

}  // namespace fastdllm::cuda
