// Host-side launch decisions of the CUDA kernels, in plain C++ so that they are
// compiled into every build and tested on the CPU in CI (tests/test_launch_plans.py):
// which GEMM serves a linear, how the block-diffusion attention splits the work
// of a ragged batch, and the shape buckets that CUDA graphs are keyed by. The
// model's plan (model/forward_plan.h) calls these; the .cu files take their
// results as arguments and decide nothing themselves.
#pragma once
#include <cstdint>
#include <vector>

#include "fastdllm/dtype.h"

namespace fastdllm::plans {

enum class GemmKind { Simt, Sm90SmallM, Sm90Large };

// Token rows up to which the swapped, stream-K configuration is used (one GEMM-N tile).
constexpr int64_t kSmallM = 64;

// bf16 / fp16 weights with 16-byte rows (K % 8, N % 8) take a CUTLASS kernel
// of their element type, by M; everything else (fp32 weights, odd sizes) the
// exact SIMT kernel.
GemmKind choose_gemm(DType weight_dtype, int64_t m, int64_t n, int64_t k);
const char* gemm_kind_name(GemmKind g);

// ---- Attention over a ragged batch (split-KV, "flash-decoding") -------------
// A work item is one CTA's job for one kv head: a tile of up to kAttnQueryTile
// consecutive queries of one sequence against one key range of that sequence.
// Its partial softmax state for query t goes to partial slot part_base[t] +
// split; the merge combines part_count[t] slots per query.
constexpr int64_t kAttnQueryTile = 4;
constexpr int64_t kAttnTileKeys = 32;
constexpr int64_t kAttnTargetCtas = 264;  // two waves of a 132-SM H100

struct AttentionWork {
  int32_t q0, nq;    // batch token indices [q0, q0 + nq), all of one sequence
  int32_t k0, k1;    // key slots [k0, k1) of that sequence
  int32_t split;     // which of the sequence's splits
};
static_assert(sizeof(AttentionWork) == 5 * sizeof(int32_t), "work items are uploaded as int32 words");

struct AttentionPlan {
  int64_t keys_per_split = 0;          // a multiple of kAttnTileKeys
  std::vector<AttentionWork> work;     // grid.y of the split kernel (x: kv heads)
  std::vector<int32_t> part_base;      // [tokens]
  std::vector<int32_t> part_count;     // [tokens]: splits of the token's sequence
  int64_t num_parts = 0;               // partial slots used
};

// Plans a batch of num_seqs sequences (queries [qo_indptr[s], qo_indptr[s+1]),
// keys [0, kv_len[s]) each) so that kv_heads x work items comes near
// target_ctas: one global keys-per-split, sized by the total work, so a long
// sequence gets more splits than a short one and no split is empty. A sequence
// with no keys still gets one (empty) work item per query tile: its queries
// come out zero.
void plan_attention(const int32_t* qo_indptr, const int32_t* kv_len, int num_seqs, int64_t kv_heads,
                    AttentionPlan* out, int64_t target_ctas = kAttnTargetCtas);
// Upper bounds of a plan's work items and partial slots for any batch of at
// most `tokens` queries in `seqs` sequences: what a captured graph's grid and
// scratch are sized for, so that one graph serves every batch of its bucket.
int64_t attention_work_capacity(int64_t tokens, int64_t seqs, int64_t kv_heads,
                                int64_t target_ctas = kAttnTargetCtas);
int64_t attention_parts_capacity(int64_t tokens, int64_t kv_heads, int64_t target_ctas = kAttnTargetCtas);

// ---- Shape buckets of replayed forwards ------------------------------------
// Tokens of a forward padded for a graph: multiples of 8 up to 64, of 32 up to
// 256, of 64 up to kGraphMaxTokens; 0 above (such forwards run eagerly).
constexpr int64_t kGraphMaxTokens = 512;
int64_t token_bucket(int64_t tokens);
// Sequences (the padding sequence included): the next power of two.
int64_t seq_bucket(int64_t seqs);
// Output rows a GPU forward computes for n_logits requested rows of an n-token
// forward: the next power of two, at most n (padding repeats a requested row).
// The GPU lm_head costs the same for 1 or 32 rows (it streams the V x H weight
// either way), and bucketing keeps the number of distinct graph keys small.
int64_t logit_rows_bucket(int64_t n_logits, int64_t n);

}  // namespace fastdllm::plans
