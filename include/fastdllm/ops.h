// The op interface: one front-end per op. Each validates shapes, dtypes and
// devices, then dispatches by device in csrc/ops/kernel_table.cc. Activations
// are fp32; weights may be fp32, fp16 or bf16 (upcast in registers); KV pages
// fp32 or bf16.
#pragma once
#include <cstdint>

#include "fastdllm/paged_kv.h"
#include "fastdllm/tensor.h"
#include "fastdllm/weight_format.h"

namespace fastdllm {

namespace ops {

// out[i, :] = table[ids[i], :]  (table [V, H] any float dtype, out fp32 [n, H]).
void embedding(const TensorView& table, const TensorView& ids, const TensorView& out);

// out = weight * (x * rsqrt(mean(x^2) + eps)), per row; x fp32 [M, H]; out fp32 (may
// alias x) or bf16: the rounded operand of a following bf16 GEMM, written in the same pass.
void rms_norm(const TensorView& x, const TensorView& weight, float eps, const TensorView& out);

// In place, non-interleaved halves (Qwen2 rotate_half) on x [L, heads, head_dim]
// at absolute positions; inv_freq [head_dim/2] fp32.
void rope(const TensorView& x, const TensorView& positions, const TensorView& inv_freq);

// out[M, N] = x[M, K] @ w[N, K]^T (+ bias[N]) (+ residual[M, N]); x fp32 or bf16, out fp32.
// bias and residual are optional (pass an undefined view); residual may alias out.
// w is dense (a float matrix) or in an integer format (its codes dequantized on
// the fly: the result equals x @ dequant(w)^T up to the kernel's activation
// rounding, bf16 on AVX-512 CPUs, fp32 on AVX2).
void linear(const TensorView& x, const WeightView& w, const TensorView& bias,
            const TensorView& residual, const TensorView& out);

// out[M, I] = silu(gate_up[M, :I]) * gate_up[M, I:]; out fp32 or bf16 (as rms_norm).
void silu_mul(const TensorView& gate_up, const TensorView& out);

// The MLP's first GEMM with SiLU*mul in its epilogue: out[M, I] = silu(x @ gate^T)
// * (x @ up^T), w [2I, K] the gate/up matrix with interleaved panels: packed bf16
// (pack_gate_up_rows) or integer codes (pack_int_weight_rows with gate_up_inter;
// I % 16 == 0). CPU only: the [M, 2I] product is never written.
void linear_silu_mul(const TensorView& x, const WeightView& w, const TensorView& out);

// out = a + b (same shape; out may alias either).
void add(const TensorView& a, const TensorView& b, const TensorView& out);

// Writes k, v [num_tokens, kv_heads, head_dim] (fp32) to each token's cache
// slot: token i of sequence s at slot batch.write_offset[s] + (i - qo_indptr[s])
// of s's pages (fastdllm/paged_kv.h), rounded to the pages' dtype.
void kv_write(const PagedKV& kv, const KVBatch& batch, const TensorView& k, const TensorView& v);

// The fused step after the QKV projection: qkv [num_tokens, (heads + 2 *
// kv_heads) * head_dim] is split; q gets RoPE (at batch.positions) into q_out
// [num_tokens, heads, head_dim]; k gets RoPE and, with v, goes straight into
// each token's cache slot (as kv_write). Nothing that changes from step to step
// is a kernel argument (it is all in the batch arrays), so a CUDA graph of the
// forward can be replayed.
void qkv_rope_append(const TensorView& qkv, const TensorView& inv_freq, const PagedKV& kv, const KVBatch& batch,
                     const TensorView& q_out);

// out[i, :] = x[rows[i], :]  (x, out fp32; rows I32 on x's device, each in [0, x.shape[0])).
void gather_rows(const TensorView& x, const TensorView& rows, const TensorView& out);

// Scaled dot-product attention of a ragged batch: query i (q [num_tokens,
// heads, head_dim]) of sequence s attends to slots [0, batch.kv_limit[i]) of
// s's pages, GQA (query head h reads kv head h / (heads / kv_heads)). A query
// that sees no key gets a zero output. out [num_tokens, heads * head_dim] fp32,
// or bf16 / fp16 when it is the operand of a half GEMM (as rms_norm). On CUDA
// the work is split as `plan` says (core/launch_plans.h: plans::plan_attention
// for this batch, its arrays on the device); the CPU ignores it.
void attention(const TensorView& q, const PagedKV& kv, const KVBatch& batch, float scale, const TensorView& out,
               const AttentionPlanView& plan = AttentionPlanView());

// Per row of logits [M, V] (fp32): index of the first maximum and its softmax
// probability, without materialising the softmax.
void argmax_prob(const TensorView& logits, const TensorView& index, const TensorView& prob);

// The lm_head fused with the greedy reduction: for each row of x [M, K] and
// logits = x @ w[V, K]^T, index[r, 0] is the first maximum and prob[r, 0] its
// softmax probability; index[r, 1] / prob[r, 1] the same for the first maximum
// among the other V-1 entries (-1 / 0 when V == 1); prob[r, 2] is the softmax
// entropy in nats (log Z minus the probability-weighted mean logit: entropy
// decode rules need no softmax tensor) and prob[r, 3] the tail mass 1 - p1
// (for float64 confidence rules). index I32 [M, 2], prob F32 [M, 4]. The
// logits are never written out (CPU: reduced per L2-sized chunk).
// w may be an integer-format matrix (an int8 lm_head).
void lm_head_top2(const TensorView& x, const WeightView& w, const TensorView& index, const TensorView& prob);

// What sampling needs from the vocabulary (runtime/sampling.h does the rest on
// the host): per row of logits [M, V] fp32, stats F32 [M, 2] = (maximum, softmax
// denominator of logits / temperature), count I32 [M] and candidates I32
// [M, V, 2] = (token, fp32 bits of its logit) for count entries, in no
// particular order: the tokens that can be drawn under top_k / top_p, plus the
// few that share the last histogram bin (ops/sampling_cut.h). The exclude token
// (-1: none) counts as -inf. On a GPU only the candidates leave the device.
struct SamplingOptions {
  float temperature = 1.f;  // > 0
  float top_p = 1.f;        // (0, 1]
  int top_k = 0;            // 0: off
  int32_t exclude = -1;
};
void sampling_candidates(const TensorView& logits, const SamplingOptions& options, const TensorView& stats,
                         const TensorView& count, const TensorView& candidates);

// How a backend stores a weight matrix, decided once at load (cpu/packed_weights.h
// on the CPU): bf16 matrices on the CPU are repacked into GEMM panels, gate/up
// interleaved when the intermediate size allows the fused SiLU*mul epilogue.
struct WeightPacking {
  bool packed = false;     // bf16 panels instead of row-major
  bool fused_mlp = false;  // gate/up interleaved for linear_silu_mul
};
WeightPacking weight_packing(Device device, DType dtype, int64_t intermediate_size);
// Elements (bf16) a packed [rows, cols] matrix takes.
int64_t packed_weight_elems(int64_t rows, int64_t cols);
// Packs rows [row0, row0 + rows) of a row-major bf16 matrix with cols columns
// into dst, the whole packed matrix (its padding zeroed by the caller).
void pack_weight_rows(const uint16_t* src, int64_t rows, int64_t row0, int64_t cols, uint16_t* dst);
// The same for rows of the logical [gate; up] matrix of a fused MLP (inter rows each).
void pack_gate_up_rows(const uint16_t* src, int64_t rows, int64_t row0, int64_t inter, int64_t cols, uint16_t* dst);

// Integer-format matrices (fastdllm/weight_format.h) in a backend's layout: the
// storage one takes (code bytes; floats of scales, the same of zero_scales;
// bytes of the backend's extra parameters, WeightView::aux) ...
struct IntWeightLayout {
  int64_t code_bytes = 0, param_floats = 0, aux_bytes = 0;
};
IntWeightLayout int_weight_layout(Device device, WeightFormat format, int64_t rows, int64_t cols, int64_t group_size);
// ... and packing canonical codes into it: q [rows, cols] (one code per byte, in
// the input order of w.perm), scales and zero points [rows, groups] fp32 become
// rows [row0, row0 + rows) of w, whose pointers are HOST storage of the
// device's layout and int_weight_layout's sizes, zeroed (the caller uploads a
// GPU matrix). gate_up_inter > 0 (CPU only): the rows are of the logical
// [gate; up] matrix of that intermediate size, interleaved for linear_silu_mul.
void pack_int_weight_rows(Device device, const uint8_t* q, const float* scales, const float* zeros, int64_t rows,
                          int64_t row0, int64_t gate_up_inter, const WeightView& w);

}  // namespace ops
}  // namespace fastdllm
