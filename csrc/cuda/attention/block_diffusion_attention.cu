// Block-diffusion attention of a ragged batch over the paged KV cache on the
// GPU (ops::attention).
//
// What it computes: for batch token i of sequence s and query head h,
// softmax(scale * q.K^T) V over the keys j < kv_limit[i] of s's own pages; a
// query that sees no key gets zeros. The scheduler expresses the whole
// Fast-dLLM v2 mask as kv_limit: causal over committed blocks, bidirectional
// inside the block, and the 32-granular block-causal limit of denoising
// forwards for B > 32; no mask or score matrix is materialised.
//
// How: split-KV ("flash-decoding") in two kernels, over the work list that
// plans::plan_attention (core/launch_plans.h, tested on the CPU) made from the
// batch's real query and key lengths.
//   1. grid (kv head, work item). A work item is a tile of up to kQueryTile
//      queries of one sequence and one key range of it. A CTA serves all group =
//      heads / kv_heads query heads of its kv head for its queries (GQA: every
//      K/V tile is read once for up to kQueryTile * group rows), and walks its
//      key range in tiles of 32 keys staged through shared memory (K from its
//      transposed page layout, V row-major, both coalesced; bf16 pages widened
//      on load). Per (row, tile) one warp scores the 32 keys lane-per-key,
//      updates the row's online-softmax state (running max, sum; fp32) and its
//      unnormalised output accumulator, kept in shared memory, then writes them
//      to the query's partial slot part_base[i] + split.
//   2. grid (query, head): merges the query's part_count[i] partial states.
// Long sequences get more splits than short ones in the same batch; keys past
// the largest kv_limit of a CTA's queries cost nothing (the CTA stops there).
// Work items past work_count[0] exit at once, so a replayed graph's grid can
// cover its bucket's worst case while the real work list changes every step.
//
// Layout: fastdllm/paged_kv.h PagedKV, fp32 or bf16 pages. Limits: head_dim a
// multiple of 32 and at most 256; dynamic shared memory (2 * 32 * head_dim + 2
// * rows * head_dim + 2 * rows floats, rows = kQueryTile * group) within the
// device's opt-in limit (about 61 KB for Qwen2.5 7B: head_dim 128, group 7).
// This is a SIMT kernel: decoding attention is a small share of a forward next
// to the weight stream; a wgmma/TMA version would pay off for long prefills.
#include <cfloat>

#include "core/caching_allocator.h"
#include "cuda/cuda_common.cuh"
#include "cuda/cuda_kernels.h"
#include "fastdllm/error.h"
#include "core/launch_plans.h"

namespace fastdllm::cuda {

namespace {

constexpr int kTileKeys = int(plans::kAttnTileKeys);  // one key per lane
constexpr int kQueryTile = int(plans::kAttnQueryTile);
constexpr int kWarps = 4;
constexpr int kMaxHeadDim = 256;

struct SplitParams {
  const float* q;  // [tokens, heads, hd]
  int64_t heads;
  PagedKV kv;
  KVBatch b;
  float scale;
  const int32_t* work;        // [num_work, 5]: q0, nq, k0, k1, split (plans::AttentionWork)
  const int32_t* work_count;  // [1]
  const int32_t* part_base;   // [tokens]
  float* part_acc;            // [parts, heads, hd]
  float* part_ml;             // [parts, heads, 2]: running max, sum
};

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <class E>
__global__ void __launch_bounds__(32 * kWarps) attention_split_kernel(SplitParams p) {
  const int64_t w = blockIdx.y;
  if (w >= *p.work_count) return;  // a replayed graph's grid covers its bucket's worst case
  extern __shared__ float smem[];
  const PagedKV& kv = p.kv;
  const KVBatch& b = p.b;
  const int32_t* item = p.work + 5 * w;
  const int64_t q0 = item[0], k0 = item[2], split = item[4];
  const int nq = item[1];
  const int hd = kv.head_dim, ps = kv.page_size;
  const int64_t g = blockIdx.x;
  const int64_t group = p.heads / kv.num_kv_heads;
  const int rows = int(nq * group);  // row r: query q0 + r / group, head g * group + r % group
  const int32_t* table = b.kv_indices + b.kv_indptr[b.token_seq[q0]];  // a tile never crosses sequences
  float* ks = smem;                          // [hd][32]
  float* vs = ks + kTileKeys * hd;           // [32][hd]
  float* qs = vs + kTileKeys * hd;           // [rows][hd], pre-scaled
  float* acc = qs + kQueryTile * group * hd;  // [rows][hd]
  float* row_m = acc + kQueryTile * group * hd;
  float* row_l = row_m + kQueryTile * group;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  int64_t kmax = 0;  // the furthest key any of this CTA's queries sees
  for (int i = 0; i < nq; ++i) kmax = max(kmax, int64_t(b.kv_limit[q0 + i]));
  const int64_t k1 = min(kmax, int64_t(item[3]));

  for (int idx = threadIdx.x; idx < rows * hd; idx += blockDim.x) {
    const int r = idx / hd, e = idx % hd;
    const int64_t qi = q0 + r / group, h = g * group + r % group;
    qs[idx] = p.q[(qi * p.heads + h) * hd + e] * p.scale;
    acc[idx] = 0.f;
  }
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    row_m[r] = -FLT_MAX;
    row_l[r] = 0.f;
  }

  for (int64_t t0 = k0; t0 < k1; t0 += kTileKeys) {
    __syncthreads();  // the previous tile's readers are done (and the init above is visible)
    for (int idx = threadIdx.x; idx < kTileKeys * hd; idx += blockDim.x) {
      const int jj = idx % kTileKeys, e = idx / kTileKeys;  // K: consecutive threads, consecutive keys
      const int64_t key = t0 + jj;
      float kval = 0.f;
      if (key < k1) kval = to_f32(head_block<E>(kv, table, kv.k_offset, g, key / ps)[int64_t(e) * ps + key % ps]);
      ks[e * kTileKeys + jj] = kval;
      const int ve = idx % hd, vj = idx / hd;  // V: consecutive threads, consecutive dims
      const int64_t vkey = t0 + vj;
      float vval = 0.f;
      if (vkey < k1) vval = to_f32(head_block<E>(kv, table, kv.v_offset, g, vkey / ps)[(vkey % ps) * hd + ve]);
      vs[vj * hd + ve] = vval;
    }
    __syncthreads();
    const int64_t key = t0 + lane;
    for (int r = warp; r < rows; r += kWarps) {
      const int64_t qi = q0 + r / group;
      const bool visible = key < k1 && key < b.kv_limit[qi];
      float s = -FLT_MAX;
      if (visible) {
        const float* qr = qs + r * hd;
        float d = 0.f;
        for (int e = 0; e < hd; ++e) d += qr[e] * ks[e * kTileKeys + lane];
        s = d;
      }
      const float tile_max = warp_max(s);
      if (tile_max == -FLT_MAX) continue;  // nothing visible in this tile for this row (warp-uniform)
      const float m_old = row_m[r], m_new = fmaxf(m_old, tile_max);
      const float corr = __expf(m_old - m_new);
      const float pj = visible ? __expf(s - m_new) : 0.f;
      const float tile_sum = warp_sum(pj);
      // Fixed trip counts with a guard keep a[] in registers.
      float a[kMaxHeadDim / 32];
      const int per = hd / 32;
#pragma unroll
      for (int c = 0; c < kMaxHeadDim / 32; ++c) a[c] = c < per ? acc[r * hd + lane + 32 * c] * corr : 0.f;
      for (int j = 0; j < kTileKeys; ++j) {
        const float pb = __shfl_sync(0xffffffffu, pj, j);
        if (pb == 0.f) continue;  // warp-uniform
#pragma unroll
        for (int c = 0; c < kMaxHeadDim / 32; ++c)
          if (c < per) a[c] += pb * vs[j * hd + lane + 32 * c];
      }
#pragma unroll
      for (int c = 0; c < kMaxHeadDim / 32; ++c)
        if (c < per) acc[r * hd + lane + 32 * c] = a[c];
      __syncwarp();
      if (lane == 0) {
        row_m[r] = m_new;
        row_l[r] = row_l[r] * corr + tile_sum;
      }
      __syncwarp();
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < rows * hd; idx += blockDim.x) {
    const int r = idx / hd, e = idx % hd;
    const int64_t qi = q0 + r / group, h = g * group + r % group;
    const int64_t part = p.part_base[qi] + split;
    p.part_acc[(part * p.heads + h) * hd + e] = acc[idx];
  }
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    const int64_t qi = q0 + r / group, h = g * group + r % group;
    float* ml = p.part_ml + ((p.part_base[qi] + split) * p.heads + h) * 2;
    ml[0] = row_m[r];
    ml[1] = row_l[r];
  }
}

// One block per (query, head), head_dim threads: merges the query's partial
// states (its part_count slots from part_base); out fp32 or the half operand of o_proj.
template <class TO>
__global__ void attention_merge_kernel(const float* part_acc, const float* part_ml, const int32_t* part_base,
                                       const int32_t* part_count, int64_t heads, int hd, TO* out) {
  const int64_t i = blockIdx.x, h = blockIdx.y;
  const int64_t base = part_base[i], count = part_count[i];
  float M = -FLT_MAX;
  for (int64_t s = 0; s < count; ++s) {
    const float* ml = part_ml + ((base + s) * heads + h) * 2;
    if (ml[1] > 0.f) M = fmaxf(M, ml[0]);
  }
  float L = 0.f, o = 0.f;
  const int e = threadIdx.x;
  for (int64_t s = 0; s < count; ++s) {
    const int64_t at = (base + s) * heads + h;
    const float* ml = part_ml + at * 2;
    if (ml[1] <= 0.f) continue;
    const float w = __expf(ml[0] - M);
    L += ml[1] * w;
    o += part_acc[at * hd + e] * w;
  }
  store_as(out + (i * heads + h) * hd + e, L > 0.f ? o / L : 0.f);
}

size_t split_smem_bytes(int hd, int64_t group) {
  return sizeof(float) * size_t(2 * kTileKeys * hd + 2 * kQueryTile * group * hd + 2 * kQueryTile * group);
}

template <class E>
void set_smem_once(size_t smem) {
  static size_t smem_set = 0;  // raise the opt-in once per larger size, outside any graph capture's hot path
  if (smem > smem_set) {
    if (cudaFuncSetAttribute(attention_split_kernel<E>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) !=
        cudaSuccess)
      check_launch("attention/set_smem");
    smem_set = smem;
  }
}

}  // namespace

void attention(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale,
               const AttentionPlanView& plan, void* out, DType out_dtype) {
  const int hd = kv.head_dim;
  FDL_CHECK(hd % 32 == 0 && hd <= kMaxHeadDim, "attention on CUDA: head_dim ", hd,
            " must be a multiple of 32 and at most ", kMaxHeadDim);
  if (b.num_tokens == 0 || plan.num_work == 0) return;
  const int64_t group = heads / kv.num_kv_heads;
  const size_t smem = split_smem_bytes(hd, group);
  static int max_smem = [] {
    int v = 0;
    cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0);
    return v;
  }();
  FDL_CHECK(smem <= size_t(max_smem), "attention on CUDA: ", smem, " bytes of shared memory for group ", group,
            " and head_dim ", hd, " exceed the device's ", max_smem);
  CachingAllocator& alloc = device_allocator();
  DeviceScratch part_acc(alloc, size_t(plan.num_parts * heads * hd) * sizeof(float));
  DeviceScratch part_ml(alloc, size_t(plan.num_parts * heads * 2) * sizeof(float));
  const SplitParams p{q, heads, kv, b, scale, plan.work, plan.work_count, plan.part_base, part_acc.as<float>(),
                      part_ml.as<float>()};
  by_kv_dtype(kv.dtype, [&](auto z) {
    using E = decltype(z);
    set_smem_once<E>(smem);
    attention_split_kernel<E><<<dim3(unsigned(kv.num_kv_heads), unsigned(plan.num_work)), 32 * kWarps, smem,
                                stream()>>>(p);
  });
  check_launch("attention/split");
  by_act_dtype(out_dtype, [&](auto zo) {
    using TO = decltype(zo);
    attention_merge_kernel<TO><<<dim3(unsigned(b.num_tokens), unsigned(heads)), unsigned(hd), 0, stream()>>>(
        part_acc.as<float>(), part_ml.as<float>(), plan.part_base, plan.part_count, heads, hd, static_cast<TO*>(out));
  });
  check_launch("attention/merge");
}

}  // namespace fastdllm::cuda
