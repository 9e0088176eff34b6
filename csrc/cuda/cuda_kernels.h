// Entry points of the CUDA kernels (csrc/cuda/**.cu). Plain C++: device
// pointers and sizes; every kernel goes to cuda::stream() (core/cuda_runtime.h)
// and they return after queueing work (launch errors surface through
// check_launch()). The signatures mirror ops::KernelTable (csrc/ops) so that
// the table can point at them directly; nothing here knows the op layer.
#pragma once
#include <cstdint>

#include "fastdllm/dtype.h"
#include "fastdllm/paged_kv.h"

namespace fastdllm::cuda {

// Throws RuntimeError naming the kernel if the last launch failed.
void check_launch(const char* kernel);

void embedding(const void* table, DType t, bool packed, int64_t vocab, int64_t hidden, const int32_t* ids,
               int64_t n, float* out);
// out is float32 or bfloat16 (the rounded operand of the next GEMM).
void rms_norm(const float* x, const void* w, DType w_dtype, int64_t rows, int64_t hidden, float eps, void* out,
              DType out_dtype);
void rope(float* x, int64_t len, int64_t heads, int64_t head_dim, const int32_t* positions, const float* inv_freq);
// x is float32 or bfloat16.
void linear(const void* x, DType x_dtype, const void* w, DType w_dtype, bool packed, const void* bias, DType bias_dtype,
            const float* residual, float* out, int64_t m, int64_t n, int64_t k);
// Weight-only integer GEMM (cuda/gemm/linear_int.cu; codes in the layout of
// cuda/gemm/int_layout.h): out[m, n] = x @ dequant(w)^T (+ bias) (+ residual).
struct IntGemmArgs {
  const uint8_t* codes;
  const float *scales, *zero_scales;
  const int32_t* perm;  // input order of the codes, or null
  const uint16_t* aux = nullptr;  // bf16 scales [n*groups] then bf16 -s*z (the tensor-core GEMMs), or null
  int bits;
  int64_t group;
  const float* bias;  // fp32 or null
  const float* residual;
  float* out;
  int64_t m, n, k;
};
void linear_int(const void* x, DType x_dtype, const IntGemmArgs& args);
// W8A8 fp8 GEMM (cuda/gemm/linear_fp8.cu): x quantized to E4M3 per token
// (scale = max|x_row| / 448), then out = (xq @ wq^T) * sx[m] * sw[n] (+ bias)
// (+ residual) with fp32 accumulation on Hopper's fp8 tensor cores.
struct Fp8GemmArgs {
  const uint8_t* w;       // E4M3 [n, k]
  const float* w_scales;  // [n]
  const float* bias;      // fp32 [n] or null
  const float* residual;  // [m, n] or null; may alias out
  float* out;
  int64_t m, n, k;
};
void linear_fp8(const void* x, DType x_dtype, const Fp8GemmArgs& args);
void silu_mul(const float* gate_up, void* out, DType out_dtype, int64_t rows, int64_t inter);
void add(const float* a, const float* b, float* out, int64_t n);
// k, v [num_tokens, kv_heads, head_dim] (fp32) into each token's slot of its sequence's pages.
void kv_write(const PagedKV& kv, const KVBatch& batch, const float* k, const float* v);
// qkv [num_tokens, (heads + 2 * kv.num_kv_heads) * head_dim] -> q_out [num_tokens, heads, head_dim]
// with RoPE at batch.positions, k (RoPE) and v into each token's slot.
void qkv_rope_append(const float* qkv, int64_t heads, const float* inv_freq, const PagedKV& kv, const KVBatch& batch,
                     float* q_out);
// Split-KV attention of a ragged batch over the work list of plans::plan_attention.
void attention(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& batch, float scale,
               const AttentionPlanView& plan, void* out, DType out_dtype);
void argmax_prob(const float* logits, int64_t rows, int64_t vocab, int32_t* index, float* prob);
// index [m, 2]: top-1 and the best other entry of x[m, k] @ w[n, k]^T; prob [m, 4]: their
// softmax probabilities, the softmax entropy in nats and 1 - p1 (ops::lm_head_top2).
void gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t cols, float* out);
void lm_head_top2(const float* x, const void* w, DType w_dtype, bool packed, int64_t m, int64_t n, int64_t k,
                  int32_t* index, float* prob);
// The same over an integer-format matrix (an int8 lm_head; w.out, bias and residual unused).
void lm_head_top2_int(const float* x, const IntGemmArgs& w, int64_t m, int32_t* index, float* prob);
// stats [rows, 2], count [rows], cand [rows, vocab, 2] (ops::sampling_candidates).
void sampling_candidates(const float* logits, int64_t rows, int64_t vocab, float temperature, float top_p, int top_k,
                         int32_t exclude, float* stats, int32_t* count, int32_t* cand);


}  // namespace fastdllm::cuda
