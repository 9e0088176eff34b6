// The Qwen2 decoder forward (fast_dllm_v2.md section 1) over a ragged batch
// and the paged cache. Per layer: RMSNorm -> fused QKV (+bias) -> RoPE -> K/V
// into each token's slot -> attention over its own sequence's keys -> o_proj
// (+residual) -> RMSNorm -> fused gate/up -> SiLU*mul -> down (+residual). The
// final norm and lm_head run only on the requested rows, in the form asked
// for (greedy top-2, sampling candidates, or logits).
#include <algorithm>
#include <cmath>

#include "core/cuda_runtime.h"
#include "core/profiler.h"
#include "fastdllm/error.h"
#include "fastdllm/model.h"
#include "fastdllm/ops.h"
#include "model/forward_plan.h"
#include "model/forward_runner.h"
#include "model/qwen2_weights.h"

namespace fastdllm {

Model::Model(const ModelConfig& config, DType weight_dtype, Device device, const LayerWeightFormat& layer_format)
    : config_(config), weight_dtype_(weight_dtype), device_(device) {
  config_.validate();
  if (device == Device::CUDA) {
    const cuda::Status st = cuda::status();
    FDL_CHECK(st.built && st.device_count > 0, "device 'cuda' is not available: ",
              st.message.empty() ? "no CUDA device" : st.message);
  }
  weights_ = std::make_unique<Qwen2Weights>(config_, weight_dtype, device, layer_format);
  runner_ = std::make_unique<ForwardRunner>(*this);
}

Model::~Model() = default;

KVGeometry Model::kv_geometry(int page_size, DType kv_dtype) const {
  KVGeometry g;
  g.num_layers = config_.num_layers;
  g.num_kv_heads = config_.num_kv_heads;
  g.head_dim = config_.head_dim;
  g.page_size = page_size;
  g.dtype = kv_dtype;
  return g;
}

const std::map<std::string, std::vector<int64_t>>& Model::expected_weights() const { return weights_->expected(); }
std::map<std::string, std::vector<int64_t>> Model::checkpoint_tensors(const ModelConfig& config) {
  config.validate();
  return Qwen2Weights::expected_for(config);
}
void Model::set_weight(const std::string& name, const void* data, DType src, const std::vector<int64_t>& shape) {
  weights_->set(name, data, src, shape);
}
void Model::set_quantized_weight(const std::string& name, const uint8_t* q, const float* scales, const float* zeros,
                                 const int32_t* perm, const std::vector<int64_t>& shape) {
  weights_->set_quantized(name, q, scales, zeros, perm, shape);
}
const LayerWeightFormat& Model::layer_format() const { return weights_->layer_format(); }
int64_t Model::weight_bytes() const { return weights_->storage_bytes(); }
void Model::finalize() { weights_->finalize(); }
bool Model::ready() const { return weights_->ready(); }
Model::GraphRuns Model::graph_runs() const { return runner_->graph_runs(); }

void Model::check_batch(const ForwardBatch& b, const KVStore& kv) const {
  FDL_CHECK(ready(), "forward: the model has no weights yet (finalize() was not called)");
  FDL_CHECK(b.num_seqs > 0 && b.num_tokens > 0, "forward: empty batch (", b.num_seqs, " sequences, ", b.num_tokens,
            " tokens)");
  FDL_CHECK(b.tokens && b.positions && b.kv_limit && b.qo_indptr && b.kv_indptr && b.write_offset &&
                (b.kv_indices || b.kv_indptr[b.num_seqs] == 0),
            "forward: the batch arrays are incomplete");
  FDL_CHECK(kv.base && kv.device == device_, "forward: the KV cache is on ", device_name(kv.device), ", the model on ",
            device_name(device_));
  const KVGeometry& g = kv.geometry;
  FDL_CHECK(g.num_layers == config_.num_layers && g.num_kv_heads == config_.num_kv_heads &&
                g.head_dim == config_.head_dim,
            "forward: the KV cache was made for another model geometry");
  KVBatch kb;  // the CSR part, without token_seq (the plan derives it)
  kb.num_tokens = b.num_tokens;
  kb.num_seqs = b.num_seqs;
  kb.positions = b.positions;
  kb.kv_limit = b.kv_limit;
  kb.qo_indptr = b.qo_indptr;
  kb.kv_indptr = b.kv_indptr;
  kb.kv_indices = b.kv_indices;
  kb.write_offset = b.write_offset;
  check_kv_batch(kb, g.page_size, kv.num_pages, "forward");
  const int64_t V = config_.vocab_size;
  for (int64_t t = 0; t < b.num_tokens; ++t)
    FDL_CHECK(b.tokens[t] >= 0 && b.tokens[t] < V, "forward: token id ", b.tokens[t], " at index ", t,
              " is outside the vocabulary [0, ", V, ")");
  auto rows_ok = [&](const int32_t* rows, int64_t n, const char* what) {
    FDL_CHECK(n == 0 || rows, "forward: ", what, " rows are missing");
    for (int64_t i = 0; i < n; ++i)
      FDL_CHECK(rows[i] >= 0 && rows[i] < b.num_tokens, "forward: ", what, " row ", rows[i], " is outside [0, ",
                b.num_tokens, ")");
  };
  rows_ok(b.greedy_rows, b.num_greedy, "greedy");
  rows_ok(b.sample_rows, b.num_sample, "sampled");
  rows_ok(b.logit_rows, b.num_logits, "logit");
  FDL_CHECK(b.num_sample == 0 || b.sample_options, "forward: sampled rows need their sampling options");
}

PlanContext Model::plan_context() const {
  PlanContext ctx;
  ctx.device = device_;
  ctx.kv_heads = config_.num_kv_heads;
  ctx.graphs = runner_->graphs_enabled();  // off under FASTDLLM_CUDA_GRAPHS=0: no bucket padding then
  return ctx;
}

void Model::forward(const ForwardBatch& b, const KVStore& kv, const ForwardOutputs& out) {
  check_batch(b, kv);
  FDL_CHECK(b.num_greedy == 0 || (out.top2_index && out.top2_prob), "forward: greedy rows need top-2 outputs");
  FDL_CHECK(b.num_logits == 0 || out.logits, "forward: logit rows need a logits output");
  thread_local ForwardPlan plan;  // kept across forwards: its vectors stop allocating once warm
  plan_forward(b, plan_context(), &plan);
  runner_->run(plan, kv, out);
}

PlanSummary Model::describe_plan(const ForwardBatch& b, const KVStore& kv) const {
  check_batch(b, kv);
  ForwardPlan plan;
  plan_forward(b, plan_context(), &plan);
  PlanSummary s;
  s.tokens = plan.tokens_run;
  s.seqs = plan.seqs_run;
  s.greedy_rows = plan.greedy_run;
  s.replayable = plan.replayable;
  s.attention_work = int64_t(plan.attention.work.size());
  for (int32_t c : plan.attention.part_count) s.attention_splits_max = std::max<int64_t>(s.attention_splits_max, c);
  s.keys_per_split = plan.attention.keys_per_split;
  s.gemm = plans::gemm_kind_name(
      plans::choose_gemm(device_ == Device::CPU ? DType::F32 : weight_dtype_, plan.tokens_run, config_.hidden_size,
                         config_.hidden_size));
  return s;
}

void Model::encode(const ForwardPlan& plan, const int32_t* in, const KVStore& kvs, float* const* ar,
                   const EncodeOutputs& out) const {
  const auto& c = config_;
  const Qwen2Weights& w = *weights_;
  const int64_t n = plan.tokens_run, H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim, V = c.vocab_size;
  const int64_t nq = int64_t(c.num_heads) * hd, nkv = int64_t(c.num_kv_heads) * hd, qkv = nq + 2 * nkv;
  using Slot = ForwardRunner::Slot;
  auto view = [&](float* p, std::initializer_list<int64_t> dims) { return TensorView(p, DType::F32, dims, device_); };
  auto ints = [&](int64_t at, int64_t len) {
    return TensorView(const_cast<int32_t*>(in + at), DType::I32, {len}, device_);
  };
  // On a GPU with half weights the GEMM inputs that a norm, SiLU*mul or the
  // attention merge produces are written in the weight type (the rounding the
  // GEMM applies anyway), so no conversion pass runs before those GEMMs; the CPU
  // kernels take fp32.
  const bool half = weight_dtype_ == DType::BF16 || weight_dtype_ == DType::F16;
  const DType operand = device_ != Device::CPU && half ? weight_dtype_ : DType::F32;
  auto operand_view = [&](float* p, std::initializer_list<int64_t> dims) {
    return TensorView(p, operand, dims, device_);
  };
  const TensorView x = view(ar[Slot::kX], {n, H}), h = operand_view(ar[Slot::kH], {n, H}),
                   qkv_out = view(ar[Slot::kQkv], {n, qkv});
  const TensorView q = view(ar[Slot::kQ], {n, c.num_heads, hd});
  const TensorView attn = operand_view(ar[Slot::kAttn], {n, nq}), gate_up = view(ar[Slot::kGateUp], {n, 2 * I}),
                   act = operand_view(ar[Slot::kAct], {n, I});
  const TensorView none;
  const KVBatch batch = kv_batch(plan, in);
  const AttentionPlanView split = attention_view(plan, in);
  const float scale = 1.0f / std::sqrt(float(hd));

  using profiler::ScopedOpTimer;
  {
    ScopedOpTimer t("embedding");
    ops::embedding(w.embed(), ints(plan.at.tokens, n), x);
  }
  for (int li = 0; li < c.num_layers; ++li) {
    const Qwen2Weights::Layer L = w.layer(li);
    const PagedKV kv = kvs.layer(li);
    {
      ScopedOpTimer t("rms_norm");
      ops::rms_norm(x, L.in_norm, c.rms_norm_eps, h);
    }
    {
      ScopedOpTimer t("linear_qkv");
      ops::linear(h, L.qkv_w, L.qkv_b, none, qkv_out);
    }
    {
      ScopedOpTimer t("rope_and_kv_write");
      ops::qkv_rope_append(qkv_out, w.inv_freq(), kv, batch, q);
    }
    {
      ScopedOpTimer t("attention");
      ops::attention(q, kv, batch, scale, attn, split);
    }
    {
      ScopedOpTimer t("linear_o");
      ops::linear(attn, L.o_w, none, x, x);
    }
    {
      ScopedOpTimer t("rms_norm");
      ops::rms_norm(x, L.post_norm, c.rms_norm_eps, h);
    }
    if (w.fused_mlp()) {
      ScopedOpTimer t("linear_gate_up_silu_mul");
      ops::linear_silu_mul(h, L.gate_up_w, act);
    } else {
      {
        ScopedOpTimer t("linear_gate_up");
        ops::linear(h, L.gate_up_w, none, none, gate_up);
      }
      ScopedOpTimer t("silu_mul");
      ops::silu_mul(gate_up, act);
    }
    {
      ScopedOpTimer t("linear_down");
      ops::linear(act, L.down_w, none, x, x);
    }
  }

  // The output rows: their hidden states gathered and normed, then the lm_head
  // in the form each kind asks for.
  const int64_t R = plan.greedy_run, NS = plan.sampled, NL = plan.logits;
  float* last = ar[Slot::kLast];
  auto final_rows = [&](int64_t at, int64_t rows, float* dst) {
    const TensorView v = view(dst, {rows, H});
    ScopedOpTimer t("final_norm");
    ops::gather_rows(x, ints(at, rows), v);
    ops::rms_norm(v, w.final_norm(), c.rms_norm_eps, v);
    return v;
  };
  if (R > 0) {
    const TensorView rows = final_rows(plan.at.greedy_rows, R, last);
    ScopedOpTimer t("lm_head_top2");
    ops::lm_head_top2(rows, w.lm_head(), TensorView(out.top2_index, DType::I32, {R, 2}, device_),
                      TensorView(out.top2_prob, DType::F32, {R, 4}, device_));
  }
  if (NS + NL > 0) {
    float* logits = ar[Slot::kLogits];
    if (NS > 0) {
      const TensorView rows = final_rows(plan.at.sample_rows, NS, last + R * H);
      ScopedOpTimer t("lm_head");
      ops::linear(rows, w.lm_head(), none, none, view(logits, {NS, V}));
    }
    if (NL > 0) {
      const TensorView rows = final_rows(plan.at.logit_rows, NL, last + (R + NS) * H);
      ScopedOpTimer t("lm_head");
      ops::linear(rows, w.lm_head(), none, none, view(logits + NS * V, {NL, V}));
    }
  }
  if (NS > 0) {
    // One candidates pass per run of rows that share their options (a sequence's rows).
    ScopedOpTimer t("sampling_candidates");
    const ops::SamplingOptions* o = plan.sample_options;
    for (int64_t r0 = 0; r0 < NS;) {
      int64_t r1 = r0 + 1;
      while (r1 < NS && o[r1].temperature == o[r0].temperature && o[r1].top_p == o[r0].top_p &&
             o[r1].top_k == o[r0].top_k && o[r1].exclude == o[r0].exclude)
        ++r1;
      const int64_t m = r1 - r0;
      ops::sampling_candidates(view(ar[Slot::kLogits] + r0 * V, {m, V}), o[r0],
                               TensorView(out.cand_stats + 2 * r0, DType::F32, {m, 2}, device_),
                               TensorView(out.cand_count + r0, DType::I32, {m}, device_),
                               TensorView(out.cand_pairs + 2 * r0 * V, DType::I32, {m, V, 2}, device_));
      r0 = r1;
    }
  }
}

}  // namespace fastdllm
