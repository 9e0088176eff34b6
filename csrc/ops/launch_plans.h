// Host-side launch decisions of the CUDA kernels, in plain C++ so that they are
// compiled into every build and tested on the CPU in CI (tests/test_launch_plans.py):
// which GEMM serves a linear, and how the block-diffusion attention kernel
// splits its work. The .cu files call these and nothing else decides.
#pragma once
#include <cstdint>

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

struct AttentionSplit {
  int64_t query_tiles = 0;      // grid.y: kQueryTile queries each
  int64_t splits = 0;           // grid.z: key ranges
  int64_t keys_per_split = 0;   // a multiple of kTileKeys; splits * keys_per_split >= n_kv
};
constexpr int64_t kAttnQueryTile = 4;
constexpr int64_t kAttnTileKeys = 32;

// Enough CTAs (kv heads x query tiles x splits) to cover target_ctas, in whole
// key tiles, never more splits than key tiles; prefill-sized launches get one.
AttentionSplit plan_attention(int64_t len_q, int64_t kv_heads, int64_t n_kv, int64_t target_ctas = 264);

// Output rows a GPU forward computes for n_logits requested rows of an n-token
// forward: the next power of two, at most n (padding repeats a requested row).
// The GPU lm_head costs the same for 1 or 32 rows (it streams the V x H weight
// either way), and bucketing keeps the number of distinct graph keys per token
// count at log2(n) + 1 instead of n, so the decode loop's shapes fit the graph cache.
int64_t logit_rows_bucket(int64_t n_logits, int64_t n);

}  // namespace fastdllm::plans
