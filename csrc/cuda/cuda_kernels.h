// Entry points of the CUDA kernels (csrc/cuda/**.cu). Plain C++: device
// pointers and sizes; every kernel goes to cuda::stream() (core/cuda_runtime.h)
// and they return after queueing work (launch errors surface through
// check_launch()). The signatures mirror
// ops::KernelTable so that the table can point at them directly.
#pragma once
#include <cstdint>

#include "fastdllm/dtype.h"
#include "fastdllm/ops.h"

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
void silu_mul(const float* gate_up, void* out, DType out_dtype, int64_t rows, int64_t inter);
void add(const float* a, const float* b, float* out, int64_t n);
void kv_write(const PagedKV& kv, const float* k, const float* v, int64_t len, int64_t start);
// qkv [len, (heads + 2 * kv.num_kv_heads) * head_dim] -> q_out [len, heads, head_dim] with RoPE,
// k (RoPE) and v into cache tokens [start, start + len).
void qkv_rope_append(const float* qkv, int64_t len, int64_t heads, const int32_t* positions, const float* inv_freq,
                     const PagedKV& kv, int64_t start, float* q_out);
void attention(const float* q, int64_t len_q, int64_t heads, const PagedKV& kv, int64_t n_kv, float scale,
               const int32_t* kv_limit, const uint8_t* mask, void* out,
               DType out_dtype);
void argmax_prob(const float* logits, int64_t rows, int64_t vocab, int32_t* index, float* prob);
// index, prob [m, 2]: top-1 and the best other entry of x[m, k] @ w[n, k]^T (ops::lm_head_top2).
void gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t cols, float* out);
void lm_head_top2(const float* x, const void* w, DType w_dtype, bool packed, int64_t m, int64_t n, int64_t k,
                  int32_t* index, float* prob);
// stats [rows, 2], count [rows], cand [rows, vocab, 2] (ops::sampling_candidates).
void sampling_candidates(const float* logits, int64_t rows, int64_t vocab, float temperature, float top_p, int top_k,
                         int32_t exclude, float* stats, int32_t* count, int32_t* cand);

// ops::denoise_decide; sub: the sub-block size (scratch for the rule).
void denoise_decide(int32_t* state, const int32_t* index, const float* prob, int32_t* staging, int32_t ran, int sub);

// ops::set_graph_condition.
void set_graph_condition(uint64_t condition, const int32_t* flag, int32_t value);

}  // namespace fastdllm::cuda
