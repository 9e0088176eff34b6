// The paged KV cache as the kernels see it: where one layer's K and V live in
// the page storage, and which pages each token of a ragged batch reads and
// writes. Core level: no pool, no reference counts, no model; the kv/ layer
// (kv_cache.h) owns the pages, the model fills KVBatch from a forward's batch.
#pragma once
#include <cstddef>
#include <cstdint>

#include "fastdllm/dtype.h"

namespace fastdllm {

// One page holds page_size tokens of K and V for every layer:
//   page[layer][k|v][kv_head][page_size * head_dim]   in `dtype` (float32 or bfloat16)
struct KVGeometry {
  int num_layers = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  DType dtype = DType::F32;
  int64_t page_elems() const { return int64_t(num_layers) * 2 * num_kv_heads * page_size * head_dim; }
  size_t page_bytes() const { return size_t(page_elems()) * dtype_size(dtype); }
};

// One layer's K and V inside the page storage. A kv head's block in page p
// starts at base + p * page_stride + {k,v}_offset + head * head_stride
// (elements of dtype; head_stride = page_size * head_dim); inside it V is
// row-major [row][head_dim] and K is transposed [head_dim][row] (the CPU
// attention's score loop runs over rows).
struct PagedKV {
  void* base = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int64_t page_stride = 0;
  int64_t k_offset = 0, v_offset = 0;
  int64_t head_stride = 0;
  int page_size = 0, head_dim = 0, num_kv_heads = 0;
  int64_t num_pages = 0;  // pages in the storage: page ids are in [0, num_pages)
};

// The whole page storage of a pool: what a forward reads and writes through
// its page tables. layer(i) is layer i's K/V.
struct KVStore {
  void* base = nullptr;
  KVGeometry geometry;
  Device device = Device::CPU;
  int64_t num_pages = 0;

  PagedKV layer(int i) const {
    PagedKV kv;
    kv.base = base;
    kv.dtype = geometry.dtype;
    kv.device = device;
    kv.page_stride = geometry.page_elems();
    kv.head_stride = int64_t(geometry.page_size) * geometry.head_dim;
    kv.k_offset = int64_t(i) * 2 * geometry.num_kv_heads * kv.head_stride;
    kv.v_offset = kv.k_offset + geometry.num_kv_heads * kv.head_stride;
    kv.page_size = geometry.page_size;
    kv.head_dim = geometry.head_dim;
    kv.num_kv_heads = geometry.num_kv_heads;
    kv.num_pages = num_pages;
    return kv;
  }
};

// A ragged batch: the tokens of num_seqs sequences concatenated (sequence s
// owns tokens [qo_indptr[s], qo_indptr[s+1])), each sequence with its own page
// table in CSR form (kv_indices[kv_indptr[s] .. kv_indptr[s+1]) lists its
// pages in token order: its cache slot t lives in page
// kv_indices[kv_indptr[s] + t / page_size], row t % page_size).
// Token i of sequence s writes its K/V to slot write_offset[s] + (i -
// qo_indptr[s]) (write_offset -1: the sequence writes nothing, e.g. padding)
// and attends to slots [0, kv_limit[i]) of its sequence. All arrays live on the
// device the kernels run on.
struct KVBatch {
  int64_t num_tokens = 0;
  int num_seqs = 0;
  const int32_t* token_seq = nullptr;     // [num_tokens]: the sequence of each token
  const int32_t* positions = nullptr;     // [num_tokens]: RoPE positions
  const int32_t* kv_limit = nullptr;      // [num_tokens]
  const int32_t* qo_indptr = nullptr;     // [num_seqs + 1]
  const int32_t* kv_indptr = nullptr;     // [num_seqs + 1]
  const int32_t* kv_indices = nullptr;    // [kv_indptr[num_seqs]]
  const int32_t* write_offset = nullptr;  // [num_seqs]
};

// Checks a batch's host arrays against a cache of `num_pages` pages of
// `page_size` tokens: CSR ranges in order, page table entries inside the
// cache, write slots and key limits inside each sequence's table, positions
// >= 0, and (when token_seq is set) every token's sequence. Throws
// InvalidArgument whose message starts with `what` (the op or "forward").
void check_kv_batch(const KVBatch& b, int page_size, int64_t num_pages, const char* what);

// How the CUDA attention splits a batch's work (core/launch_plans.h
// plans::plan_attention), its arrays on the device. The CPU runs per query and
// needs none.
struct AttentionPlanView {
  const int32_t* work = nullptr;        // [num_work, 5] plans::AttentionWork
  int64_t num_work = 0;                 // grid size: work items past work_count[0] exit at once
  const int32_t* work_count = nullptr;  // [1]: the batch's real number of work items
  const int32_t* part_base = nullptr;   // [num_tokens]
  const int32_t* part_count = nullptr;  // [num_tokens]
  int64_t num_parts = 0;                // partial slots the scratch must hold
};

}  // namespace fastdllm
