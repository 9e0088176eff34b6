// The op interface: one front-end per op. Each validates shapes, dtypes and
// devices, then dispatches by device x dtype in csrc/ops/dispatch.cc. Activations
// are fp32; weights may be fp32, fp16 or bf16 (upcast in registers).
#pragma once
#include <cstdint>

#include "fastdllm/tensor.h"

namespace fastdllm {

// One layer's K and V inside a paged cache. Token t of the sequence lives in
// page page_table[t / page_size], row t % page_size. A head's block starts at
// base + page * page_stride + {k,v}_offset + head * head_stride (head_stride =
// page_size * head_dim); inside it V is row-major [row][head_dim] and K is
// transposed [head_dim][row] (the CPU attention's score loop runs over rows).
struct PagedKV {
  void* base = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int64_t page_stride = 0;
  int64_t k_offset = 0, v_offset = 0;
  int64_t head_stride = 0;
  int page_size = 0, head_dim = 0, num_kv_heads = 0;
  const int32_t* page_table = nullptr;
  int num_pages = 0;

  int64_t capacity() const { return int64_t(num_pages) * page_size; }
};

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
void linear(const TensorView& x, const TensorView& w, const TensorView& bias,
            const TensorView& residual, const TensorView& out);

// out[M, I] = silu(gate_up[M, :I]) * gate_up[M, I:]; out fp32 or bf16 (as rms_norm).
void silu_mul(const TensorView& gate_up, const TensorView& out);

// The MLP's first GEMM with SiLU*mul in its epilogue: out[M, I] = silu(x @ gate^T)
// * (x @ up^T), w [2I, K] the packed bf16 gate/up matrix with interleaved panels
// (cpu/packed_weights.h pack_gate_up_rows; I % 16 == 0). CPU only: the [M, 2I]
// product is never written.
void linear_silu_mul(const TensorView& x, const TensorView& w, const TensorView& out);

// out = a + b (same shape; out may alias either).
void add(const TensorView& a, const TensorView& b, const TensorView& out);

// Writes k, v [L, kv_heads, head_dim] (fp32) to tokens [start, start+L) of the cache.
void kv_write(const PagedKV& kv, const TensorView& k, const TensorView& v, int64_t start);

// The fused step after the QKV projection: qkv [L, (heads + 2 * kv_heads) * head_dim]
// is split; q gets RoPE into q_out [L, heads, head_dim]; k gets RoPE and, with v,
// goes straight into tokens [start, start+L) of the cache. Same math as
// rope + kv_write, one pass over the data.
// start == kSlotsFromPositions: token t goes to cache slot positions[t] instead
// (the decode loop always writes a token at its position); then nothing that
// changes from step to step is a kernel argument, which lets a CUDA graph of the
// forward be replayed.
constexpr int64_t kSlotsFromPositions = -1;
void qkv_rope_append(const TensorView& qkv, const TensorView& positions, const TensorView& inv_freq,
                     const PagedKV& kv, int64_t start, const TensorView& q_out);

// out[i, :] = x[rows[i], :]  (x, out fp32; rows I32 on x's device, each in [0, x.shape[0])).
void gather_rows(const TensorView& x, const TensorView& rows, const TensorView& out);

// Scaled dot-product attention of q [Lq, heads, head_dim] over the first n_kv
// tokens of the cache, GQA (query head h reads kv head h / (heads / kv_heads)).
// Visibility: key j is visible to query i iff j < kv_limit[i] (when kv_limit is
// given) and mask[i, j] != 0 (when mask [Lq, n_kv] uint8 is given). A query that
// sees no key gets a zero output. out [Lq, heads * head_dim] fp32, or bf16 when it is
// the operand of a bf16 GEMM (as rms_norm).
void attention(const TensorView& q, const PagedKV& kv, int64_t n_kv, float scale,
               const TensorView& kv_limit, const TensorView& mask, const TensorView& out);

// Per row of logits [M, V] (fp32): index of the first maximum and its softmax
// probability, without materialising the softmax.
void argmax_prob(const TensorView& logits, const TensorView& index, const TensorView& prob);

// The lm_head fused with the greedy reduction: for each row of x [M, K] and
// logits = x @ w[V, K]^T, index[r, 0] is the first maximum and prob[r, 0] its
// softmax probability; index[r, 1] / prob[r, 1] the same for the first maximum
// among the other V-1 entries (-1 / 0 when V == 1). index I32 [M, 2], prob F32
// [M, 2]. The logits are never written out (CPU: reduced per L2-sized chunk).
void lm_head_top2(const TensorView& x, const TensorView& w, const TensorView& index, const TensorView& prob);

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

// The threshold decisions of one denoising forward on the device that ran it
// (ops/denoise_rule.h): state I32 [denoise::state_words(block, pages)] holds the
// block; index I32 / prob F32 [rows, 2] are the forward's top-2 for the
// sub-block's positions (rows >= sub); ran is the forward's kind
// (denoise::kFull / kSub). Unmasks, finds what comes next and, when that is
// another denoising forward, writes its step inputs to staging I32 (at least
// denoise::step_inputs_len long for either kind) and names it in the state's
// `go`. The shape arguments repeat the header's, which a GPU cannot check.
struct DenoiseShape {
  int block = 0, sub = 0, pages = 0, rows_full = 0, rows_sub = 0;
};
void denoise_decide(const TensorView& state, const TensorView& index, const TensorView& prob,
                    const TensorView& staging, const DenoiseShape& shape, int32_t ran);

// The first node of a guarded CUDA graph (cuda::graph_capture_if): sets the
// graph's IF condition (a cudaGraphConditionalHandle) to flag[0] == value,
// flag I32 on the device. CUDA only.
void set_graph_condition(uint64_t condition, const TensorView& flag, int32_t value);

}  // namespace ops
}  // namespace fastdllm
