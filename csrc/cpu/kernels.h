// CPU kernels: raw pointers and sizes, fp32 activations, no validation (the op
// front-ends in csrc/ops validate). Threaded with OpenMP. linear() has one
// variant per ISA (linear_isa.h), chosen at run time by cpu::isa().
#pragma once
#include <cstdint>

#include "fastdllm/dtype.h"
#include "fastdllm/paged_kv.h"
#include "fastdllm/weight_format.h"

namespace fastdllm::cpu {

// packed: table is a bf16 [vocab, hidden] matrix in the packed layout (the tied lm_head).
void embedding(const void* table, DType table_dtype, bool packed, int64_t vocab, int64_t hidden,
               const int32_t* ids, int64_t n, float* out);
// out is float32 or bfloat16 (the rounded operand of the next GEMM).
void rms_norm(const float* x, const void* w, DType w_dtype, int64_t rows, int64_t hidden, float eps, void* out,
              DType out_dtype);
void rope(float* x, int64_t len, int64_t heads, int64_t head_dim, const int32_t* positions,
          const float* inv_freq);
// x is float32 or bfloat16.
void linear(const void* x, DType x_dtype, const void* w, DType w_dtype, bool packed, const void* bias, DType bias_dtype,
            const float* residual, float* out, int64_t m, int64_t n, int64_t k);
// w: an integer-format matrix in the CPU code layout (cpu/int_weights.h). With
// silu, w is the gate/up-interleaved [2I, K] matrix and out [m, I] = silu(gate) * up.
void linear_int(const void* x, DType x_dtype, const WeightView& w, const void* bias, DType bias_dtype,
                const float* residual, float* out, int64_t m, bool silu);
void silu_mul(const float* gate_up, void* out, DType out_dtype, int64_t rows, int64_t inter);
void add(const float* a, const float* b, float* out, int64_t n);
// Writes k, v [num_tokens, kv_heads, head_dim] (fp32) to each token's slot of its sequence's pages.
void kv_write(const PagedKV& kv, const KVBatch& batch, const float* k, const float* v);
// qkv [num_tokens, (heads + 2 * kv.num_kv_heads) * head_dim] -> q_out [num_tokens, heads, head_dim]
// with RoPE at batch.positions, k (RoPE) and v into each token's slot.
void qkv_rope_append(const float* qkv, int64_t heads, const float* inv_freq, const PagedKV& kv, const KVBatch& batch,
                     float* q_out);
// out [num_tokens, heads * head_dim]: each query over keys [0, kv_limit) of its sequence.
void attention(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& batch, float scale, void* out,
               DType out_dtype);
void argmax_prob(const float* logits, int64_t rows, int64_t vocab, int32_t* index, float* prob);
// w: the packed, gate/up-interleaved matrix (ops::linear_silu_mul).
void linear_silu_mul(const float* x, const uint16_t* w, float* out, int64_t m, int64_t inter, int64_t k);
void gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t cols, float* out);
// index [m, 2]: top-1 and the best other entry of x[m, k] @ w[n, k]^T; prob [m, 4]: their
// softmax probabilities, the softmax entropy in nats and 1 - p1 (ops::lm_head_top2).
// The same over an integer-format matrix in the CPU code layout (an int8 lm_head).
void lm_head_top2_int(const float* x, const WeightView& w, int64_t m, int32_t* index, float* prob);
void lm_head_top2(const float* x, const void* w, DType w_dtype, bool packed, int64_t m, int64_t n, int64_t k,
                  int32_t* index, float* prob);
// stats [rows, 2], count [rows], cand [rows, vocab, 2] (ops::sampling_candidates).
void sampling_candidates(const float* logits, int64_t rows, int64_t vocab, float temperature, float top_p, int top_k,
                         int32_t exclude, float* stats, int32_t* count, int32_t* cand);

}  // namespace fastdllm::cpu
