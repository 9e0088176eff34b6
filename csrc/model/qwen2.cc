// The Qwen2 decoder forward (fast_dllm_v2.md section 1) over the paged cache.
// Per layer: RMSNorm -> fused QKV (+bias) -> RoPE -> K/V into the cache ->
// attention -> o_proj (+residual) -> RMSNorm -> fused gate/up -> SiLU*mul ->
// down (+residual). The final norm and lm_head run only on the requested rows.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <stdexcept>

#include "fastdllm/error.h"
#include "fastdllm/model.h"
#include "fastdllm/ops.h"
#include "core/cuda_runtime.h"
#include "core/device_memory.h"
#include "core/profiler.h"
#include "cpu/packed_weights.h"
#include "model/step_inputs.h"
#include "ops/denoise_rule.h"
#include "ops/launch_plans.h"
#include "model/weight_convert.h"
#include "runtime/graph_cache.h"

namespace fastdllm {

namespace {

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// The driver could not build a guarded graph (conditional nodes need CUDA 12.4+).
struct GuardedCaptureFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};
void* capture_guarded(const int32_t* flag, int32_t value, const std::function<void()>& body) {
  const TensorView f(const_cast<int32_t*>(flag), DType::I32, {1}, Device::CUDA);
  try {
    return cuda::graph_capture_if([&](uint64_t condition) { ops::set_graph_condition(condition, f, value); }, body);
  } catch (const std::exception& e) {
    throw GuardedCaptureFailed(e.what());
  }
}

// Parses "model.layers.{i}.{rest}" into (i, rest); false for other names.
bool split_layer_name(const std::string& name, int* layer, std::string* rest) {
  static const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return false;
  const std::string idx = name.substr(prefix.size(), dot - prefix.size());
  if (idx.empty() || idx.find_first_not_of("0123456789") != std::string::npos) return false;
  *layer = std::stoi(idx);
  *rest = name.substr(dot + 1);
  return true;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

Model::Model(const ModelConfig& config, DType weight_dtype, Device device)
    : config_(config), weight_dtype_(weight_dtype), device_(device) {
  config_.validate();
  FDL_CHECK(is_float(weight_dtype), "model dtype must be float32, float16 or bfloat16, got ",
            dtype_name(weight_dtype));
  if (device == Device::CUDA) {
    const cuda::Status st = cuda::status();
    FDL_CHECK(st.built && st.device_count > 0, "device 'cuda' is not available: ",
              st.message.empty() ? "no CUDA device" : st.message);
  }
  const auto& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t qkv = int64_t(c.num_heads + 2 * c.num_kv_heads) * hd;
  // bf16 matrices are stored packed for the CPU GEMM (cpu/packed_weights.h),
  // gate/up with interleaved panels for the GEMM with SiLU*mul in its epilogue.
  packed_ = weight_dtype == DType::BF16 && device == Device::CPU;
  fused_mlp_ = packed_ && I % cpu::kPanelRows == 0;
  act_ = Buffer(64, device);
  staging_ = Buffer(64, device);
  logits_dev_ = Buffer(64, device);
  denoise_state_ = Buffer(64, device);
  const bool pack_embed = packed_ && c.tie_word_embeddings;  // the tied embedding is the lm_head
  embed_ = matrix_buffer(c.vocab_size, H, pack_embed);
  if (!c.tie_word_embeddings) lm_head_ = matrix_buffer(c.vocab_size, H, packed_);
  final_norm_ = Buffer(size_t(H) * 4, device);
  layers_.resize(size_t(c.num_layers));
  for (auto& L : layers_) {
    L.qkv_w = matrix_buffer(qkv, H, packed_);
    L.qkv_b = Buffer(size_t(qkv) * 4, device);
    L.o_w = matrix_buffer(H, c.num_heads * hd, packed_);
    L.gate_up_w = matrix_buffer(2 * I, H, packed_);
    L.down_w = matrix_buffer(H, I, packed_);
    L.in_norm = Buffer(size_t(H) * 4, device);
    L.post_norm = Buffer(size_t(H) * 4, device);
  }
  // inv_freq = 1 / theta^(2i/hd) in fp32, as HF computes it.
  inv_freq_ = Buffer(size_t(hd / 2) * 4, device);
  std::vector<float> f(size_t(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i)
    f[size_t(i)] = 1.0f / std::pow(c.rope_theta, float(2 * i) / float(hd));
  copy_bytes(inv_freq_.data(), f.data(), f.size() * 4, device);
  expected_ = make_expected_weights();
  step_ = std::make_unique<StepInputs>();
  const char* g = std::getenv("FASTDLLM_CUDA_GRAPHS");
  if (device == Device::CUDA && !(g && g[0] == '0'))
    graphs_ = std::make_unique<GraphCache>(
        GraphCache::Backend{cuda::graph_capture, cuda::graph_launch, cuda::graph_destroy, capture_guarded});
}

Model::~Model() = default;

KVGeometry Model::kv_geometry(int page_size) const {
  KVGeometry g;
  g.num_layers = config_.num_layers;
  g.num_kv_heads = config_.num_kv_heads;
  g.head_dim = config_.head_dim;
  g.page_size = page_size;
  return g;
}

std::map<std::string, std::vector<int64_t>> Model::make_expected_weights() const {
  const auto& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q = int64_t(c.num_heads) * hd, kv = int64_t(c.num_kv_heads) * hd;
  std::map<std::string, std::vector<int64_t>> w;
  w["model.embed_tokens.weight"] = {c.vocab_size, H};
  w["model.norm.weight"] = {H};
  if (!c.tie_word_embeddings) w["lm_head.weight"] = {c.vocab_size, H};
  for (int i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    w[p + "input_layernorm.weight"] = {H};
    w[p + "post_attention_layernorm.weight"] = {H};
    w[p + "self_attn.q_proj.weight"] = {q, H};
    w[p + "self_attn.q_proj.bias"] = {q};
    w[p + "self_attn.k_proj.weight"] = {kv, H};
    w[p + "self_attn.k_proj.bias"] = {kv};
    w[p + "self_attn.v_proj.weight"] = {kv, H};
    w[p + "self_attn.v_proj.bias"] = {kv};
    w[p + "self_attn.o_proj.weight"] = {H, q};
    w[p + "mlp.gate_proj.weight"] = {I, H};
    w[p + "mlp.up_proj.weight"] = {I, H};
    w[p + "mlp.down_proj.weight"] = {H, I};
  }
  return w;
}

void Model::set_weight(const std::string& name, const void* data, DType src, const std::vector<int64_t>& shape) {
  const auto it = expected_.find(name);
  FDL_CHECK(it != expected_.end(), "unexpected tensor '", name, "' for this model config");
  FDL_CHECK(is_float(src), "tensor '", name, "': dtype ", dtype_name(src), " is not a float type");
  FDL_CHECK(shape == it->second, "tensor '", name, "' has shape ", shape_str(shape), ", expected ",
            shape_str(it->second));
  FDL_CHECK(!ready_, "tensor '", name, "': the model is already finalized");
  const auto& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q = int64_t(c.num_heads) * hd, kv = int64_t(c.num_kv_heads) * hd;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  auto put = [&](const Buffer& dst, int64_t elem_offset, DType dt) {
    char* d = static_cast<char*>(dst.data()) + size_t(elem_offset) * dtype_size(dt);
    if (device_ == Device::CPU) return convert_elements(data, src, d, dt, n);
    std::vector<char> host(size_t(n) * dtype_size(dt));  // convert on the host, then upload
    convert_elements(data, src, host.data(), dt, n);
    copy_bytes(d, host.data(), host.size(), device_);
  };
  // The tensor as bf16 rows, for packing (converted once if the checkpoint has another dtype).
  std::vector<uint16_t> tmp;
  auto bf16_rows = [&]() -> const uint16_t* {
    if (src == DType::BF16) return static_cast<const uint16_t*>(data);
    tmp.resize(size_t(n));
    convert_elements(data, src, tmp.data(), DType::BF16, n);
    return tmp.data();
  };
  // A matrix block of rows [row0, row0 + shape[0]) of a weight with k columns.
  auto put_rows = [&](const Buffer& dst, int64_t row0, int64_t k, bool packed) {
    if (!packed) return put(dst, row0 * k, weight_dtype_);
    cpu::pack_bf16_rows(bf16_rows(), shape[0], row0, k, static_cast<uint16_t*>(dst.data()));
  };
  // gate (row0 0) or up (row0 I) into the fused [gate; up] matrix.
  auto put_gate_up = [&](const Buffer& dst, int64_t row0) {
    if (!fused_mlp_) return put_rows(dst, row0, H, packed_);
    cpu::pack_gate_up_rows(bf16_rows(), shape[0], row0, I, H, static_cast<uint16_t*>(dst.data()));
  };
  const bool pack_embed = packed_ && c.tie_word_embeddings;
  int li;
  std::string rest;
  if (name == "model.embed_tokens.weight") {
    put_rows(embed_, 0, H, pack_embed);
  } else if (name == "lm_head.weight") {
    put_rows(lm_head_, 0, H, packed_);
  } else if (name == "model.norm.weight") {
    put(final_norm_, 0, DType::F32);
  } else if (split_layer_name(name, &li, &rest)) {
    Layer& L = layers_[size_t(li)];
    if (rest == "input_layernorm.weight") put(L.in_norm, 0, DType::F32);
    else if (rest == "post_attention_layernorm.weight") put(L.post_norm, 0, DType::F32);
    else if (rest == "self_attn.q_proj.weight") put_rows(L.qkv_w, 0, H, packed_);
    else if (rest == "self_attn.k_proj.weight") put_rows(L.qkv_w, q, H, packed_);
    else if (rest == "self_attn.v_proj.weight") put_rows(L.qkv_w, q + kv, H, packed_);
    else if (rest == "self_attn.q_proj.bias") put(L.qkv_b, 0, DType::F32);
    else if (rest == "self_attn.k_proj.bias") put(L.qkv_b, q, DType::F32);
    else if (rest == "self_attn.v_proj.bias") put(L.qkv_b, q + kv, DType::F32);
    else if (rest == "self_attn.o_proj.weight") put_rows(L.o_w, 0, q, packed_);
    else if (rest == "mlp.gate_proj.weight") put_gate_up(L.gate_up_w, 0);
    else if (rest == "mlp.up_proj.weight") put_gate_up(L.gate_up_w, I);
    else if (rest == "mlp.down_proj.weight") put_rows(L.down_w, 0, I, packed_);
  }
  loaded_.insert(name);
}

void Model::finalize() {
  for (const auto& kv : expected_)
    FDL_CHECK(loaded_.count(kv.first), "missing tensor '", kv.first, "' (no shard of the checkpoint provides it)");
  ready_ = true;
}

Buffer Model::matrix_buffer(int64_t rows, int64_t cols, bool packed) const {
  if (!packed) return Buffer(size_t(rows * cols) * dtype_size(weight_dtype_), device_);
  Buffer b(size_t(cpu::packed_elems(rows, cols)) * 2, device_);
  if (rows % cpu::kPanelRows || cols % 2) std::memset(b.data(), 0, b.size());  // zero padding
  return b;
}

TensorView Model::weight_view(const Buffer& b, std::initializer_list<int64_t> dims, bool packed) const {
  TensorView v(b.data(), weight_dtype_, dims, device_);
  v.packed = packed;
  return v;
}

void Model::check_forward(const ForwardArgs& a) const {
  FDL_CHECK(ready_, "forward: the model has no weights yet (finalize() was not called)");
  FDL_CHECK(a.n > 0, "forward: no tokens");
  FDL_CHECK(a.tokens && a.positions, "forward: tokens and positions are required");
  FDL_CHECK(a.pool != nullptr, "forward: no KV cache");
  FDL_CHECK(a.pool->device() == device_, "forward: the KV cache is on ", device_name(a.pool->device()),
            ", the model on ", device_name(device_));
  const KVGeometry& g = a.pool->geometry();
  FDL_CHECK(g.num_layers == config_.num_layers && g.num_kv_heads == config_.num_kv_heads &&
                g.head_dim == config_.head_dim,
            "forward: the KV cache was made for another model geometry");
  const int64_t cap = int64_t(a.num_pages) * g.page_size;
  FDL_CHECK(a.write_start >= 0 && a.write_start + a.n <= cap, "forward: writing tokens [", a.write_start,
            ", ", a.write_start + a.n, ") needs more than the ", cap, " tokens the page table holds");
  FDL_CHECK(a.n_kv > 0 && a.n_kv <= cap, "forward: n_kv=", a.n_kv, " is outside (0, ", cap, "]");
  for (int i = 0; i < a.num_pages; ++i)
    FDL_CHECK(a.page_table[i] >= 0 && a.page_table[i] < a.pool->capacity() &&
                  a.pool->refcount(a.page_table[i]) > 0,
              "forward: page table entry ", i, " (page ", a.page_table[i], ") is not an allocated page");
  for (int64_t i = 0; i < a.n; ++i)
    FDL_CHECK(a.positions[i] >= 0, "forward: negative position ", a.positions[i], " at index ", i);
  for (int64_t i = 0; i < a.n_logits; ++i)
    FDL_CHECK(a.logit_rows[i] >= 0 && a.logit_rows[i] < a.n, "forward: logit row ", a.logit_rows[i],
              " is outside [0, ", a.n, ")");
}

void Model::forward(const ForwardArgs& a, float* logits_out) {
  Output out;
  out.logits = logits_out;
  run(a, out);
}

void Model::forward_top2(const ForwardArgs& a, int32_t* index_out, float* prob_out) {
  Output out;
  out.index = index_out;
  out.prob = prob_out;
  run(a, out);
}

void Model::forward_candidates(const ForwardArgs& a, const ops::SamplingOptions& options, SamplingCandidates* c) {
  c->resize(a.n_logits, config_.vocab_size);
  Output out;
  out.stats = c->stats.data();
  out.count = c->count.data();
  out.cand = c->pairs.data();
  out.sampling = options;
  run(a, out);
}

// Arena layout (fp32): x | h | qkv | q | attn | gate_up | act | last
// (gate_up is empty when SiLU*mul runs in the gate/up GEMM's epilogue).
Model::Arena Model::arena(int64_t n, int64_t nl) {
  const auto& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = int64_t(c.num_heads) * hd, qkv = nq + 2 * int64_t(c.num_kv_heads) * hd;
  const int64_t gate_up = fused_mlp_ ? 0 : n * 2 * I;
  const int64_t sizes[Arena::kSlots] = {n * H, n * H, n * qkv, n * nq, n * nq, gate_up, n * I, nl * H};
  int64_t total = 0;
  for (int64_t s : sizes) total += (s + 15) / 16 * 16;
  act_.reserve(size_t(total) * 4);
  Arena ar;
  float* base = static_cast<float*>(act_.data());
  for (int i = 0; i < Arena::kSlots; ++i) {
    ar.slot[i] = base;
    base += (sizes[i] + 15) / 16 * 16;
  }
  return ar;
}

uint64_t Model::graph_epoch() const { return (buffers_epoch_ << 32) ^ cuda::device_allocator().generation(); }

// Everything a forward touches sits at addresses that stay fixed while the
// shapes repeat; growth of any of these buffers moves them (a new epoch drops
// the graphs that point into them).
void Model::grow_buffers(const std::function<void()>& grow) {
  const void* before[] = {act_.data(), staging_.data(), logits_dev_.data(), denoise_state_.data()};
  grow();
  const void* after[] = {act_.data(), staging_.data(), logits_dev_.data(), denoise_state_.data()};
  if (!std::equal(std::begin(before), std::end(before), std::begin(after))) ++buffers_epoch_;
}

void Model::run(const ForwardArgs& a, const Output& out) {
  check_forward(a);
  if (denoise_owner_) {
    // A host-decided forward rewrites the staging the device decisions keep
    // for their next launch; queued ones finish first (buffers may move below).
    if (device_ != Device::CPU) cuda::synchronize();
    denoise_owner_ = nullptr;
  }
  const int64_t n = a.n, V = config_.vocab_size;
  const bool top2 = out.index != nullptr, sampling = out.cand != nullptr;
  // On a GPU the output rows are bucketed (more graph replays, same cost); the
  // caller gets its a.n_logits rows.
  pack_step_inputs(a, a.pool->capacity(),
                   device_ == Device::CPU ? a.n_logits : plans::logit_rows_bucket(a.n_logits, n), step_.get());
  const int64_t nl = step_->n_logits;

  Arena ar;
  // logits_dev_: the greedy top-2 [nl, 4] | logits [nl, V] | with sampling on a
  // GPU, then stats [nl, 2] + count [nl] + candidates [nl, V, 2] (the CPU writes
  // those straight into the caller's buffers).
  const size_t cand_bytes = sampling && device_ != Device::CPU ? size_t(nl) * 12 + size_t(nl * V) * 8 : 0;
  grow_buffers([&] {
    ar = arena(n, nl);
    if (device_ != Device::CPU) {
      const size_t ints = step_->data.size() * 4;
      staging_.reserve(ints + (a.mask ? size_t(n * a.n_kv) : 0));
      logits_dev_.reserve(top2 ? size_t(nl) * 16 : size_t(nl * V) * 4 + cand_bytes);
    } else if (sampling) {
      logits_dev_.reserve(size_t(nl * V) * 4);
    }
  });
  const int32_t* in = step_->data.data();
  const uint8_t* mask = a.mask;
  Output dev = out;
  if (device_ != Device::CPU) {
    int32_t* s32 = static_cast<int32_t*>(staging_.data());
    // One upload per forward, not waited for: the forward follows it on the stream.
    cuda::upload_async(s32, step_->data.data(), step_->data.size() * 4);
    in = s32;
    if (a.mask) {
      uint8_t* m8 = reinterpret_cast<uint8_t*>(s32 + step_->data.size());
      cuda::upload_async(m8, a.mask, size_t(n * a.n_kv));
      mask = m8;
    }
    if (top2) {
      dev.index = static_cast<int32_t*>(logits_dev_.data());
      dev.prob = reinterpret_cast<float*>(dev.index + 2 * nl);
    } else {
      dev.logits = static_cast<float*>(logits_dev_.data());
    }
    if (sampling) {
      dev.stats = dev.logits + nl * V;
      dev.count = reinterpret_cast<int32_t*>(dev.stats + 2 * nl);
      dev.cand = dev.count + nl;
    }
  } else if (sampling) {
    dev.logits = static_cast<float*>(logits_dev_.data());
  }

  const auto body = [&] { encode(a, ar, in, mask, dev); };
  if (graphs_ && !a.mask && step_->slots_from_positions) {
    GraphKey key;
    key.n = n;
    key.n_logits = nl;
    key.output = top2 ? 1 : sampling ? 2 : 0;
    if (sampling) {
      key.temperature = out.sampling.temperature;
      key.top_p = out.sampling.top_p;
      key.top_k = out.sampling.top_k;
      key.exclude = out.sampling.exclude;
    }
    key.pool = a.pool->layer(0, nullptr, 0).base;  // the pages' storage: a new pool at an old address differs
    key.pages = step_->pages;
    ++graph_runs_[int(graphs_->run(key, graph_epoch(), body))];
  } else {
    body();
  }

  const int64_t rows_out = a.n_logits;
  if (device_ != Device::CPU && rows_out > 0) {  // results come down (the copy waits for the forward)
    if (top2) {  // index [nl, 2] and prob [nl, 2] sit back to back: one copy, one wait
      top2_host_.resize(size_t(4 * nl));
      copy_bytes(top2_host_.data(), dev.index, size_t(nl) * 16, device_);
      std::memcpy(out.index, top2_host_.data(), size_t(rows_out) * 8);
      std::memcpy(out.prob, top2_host_.data() + 2 * nl, size_t(rows_out) * 8);
    } else if (sampling) {
      download_candidates(dev, out, rows_out);
    } else {
      copy_bytes(out.logits, dev.logits, size_t(rows_out * V) * 4, device_);
    }
  }
}

void Model::denoise_begin(const void* owner, const int32_t* state, const PagePool* pool) {
  const auto& h = *reinterpret_cast<const denoise::DenoiseHeader*>(state);
  FDL_CHECK(ready_, "denoise_begin: the model's weights are not all loaded");
  FDL_CHECK(pool && pool->device() == device_ && pool->geometry().num_layers == config_.num_layers &&
                pool->geometry().num_kv_heads == config_.num_kv_heads &&
                pool->geometry().head_dim == config_.head_dim && h.pages <= pool->capacity(),
            "denoise_begin: the page pool does not match this model");
  FDL_CHECK(h.block > 0 && h.sub > 0 && h.block % h.sub == 0 && h.pages > 0 && h.rows_full >= h.sub &&
                h.rows_sub >= h.sub && (h.go == denoise::kFull || h.go == denoise::kSub) && h.sub_block >= 0 &&
                h.sub_block < h.block / h.sub,
            "denoise_begin: inconsistent denoise state (block ", h.block, ", sub ", h.sub, ", pages ", h.pages,
            ", go ", h.go, ")");
  const int64_t words = denoise::state_words(h.block, h.pages);
  const int64_t staging_words = denoise::max_step_inputs_len(h.block, h.sub, h.pages, h.rows_full, h.rows_sub);
  if (denoise_owner_ != owner && denoise_owner_ && device_ != Device::CPU) cuda::synchronize();
  grow_buffers([&] {
    arena(h.block, h.rows_full);  // the larger kind: speculative launches must not grow anything
    staging_.reserve(size_t(staging_words) * 4);
    logits_dev_.reserve(size_t(std::max(h.rows_full, h.rows_sub)) * 16);
    denoise_state_.reserve(size_t(words) * 4);
  });
  step_->data.resize(size_t(staging_words));
  denoise::write_step_inputs(state, h.go, step_->data.data());
  if (device_ != Device::CPU) {
    cuda::upload_async(staging_.data(), step_->data.data(), step_->data.size() * 4);
    cuda::upload_async(denoise_state_.data(), state, size_t(words) * 4);
  } else {
    std::memcpy(denoise_state_.data(), state, size_t(words) * 4);
  }
  denoise_header_.assign(state, state + denoise::kHeaderWords);
  denoise_pool_ = pool;
  denoise_owner_ = owner;
}

bool Model::denoise_launch(const void* owner, int32_t kind, bool speculative, int32_t* result, void* event) {
  FDL_CHECK((owner && owner == denoise_owner_) || speculative, "denoise_launch: no denoise_begin for this caller");
  if (owner != denoise_owner_) return false;
  FDL_CHECK(kind == denoise::kFull || kind == denoise::kSub, "denoise_launch: kind must be kFull or kSub, got ", kind);
  const auto& h = *reinterpret_cast<const denoise::DenoiseHeader*>(denoise_header_.data());
  const int64_t n = kind == denoise::kFull ? h.block : h.sub;
  const int64_t nl = kind == denoise::kFull ? h.rows_full : h.rows_sub;
  const int64_t words = denoise::state_words(h.block, h.pages);
  step_->n = n;
  step_->n_logits = nl;
  step_->pages = h.pages;
  step_->slots_from_positions = true;
  ForwardArgs a;
  a.n = n;
  a.pool = denoise_pool_;
  a.num_pages = h.pages;
  a.n_logits = nl;
  const void* act_before = act_.data();
  const Arena ar = arena(n, nl);
  FDL_CHECK(act_.data() == act_before, "denoise_launch: the activation arena grew after denoise_begin");
  Output dev;
  dev.index = static_cast<int32_t*>(logits_dev_.data());
  dev.prob = reinterpret_cast<float*>(dev.index + 2 * nl);
  int32_t* state = static_cast<int32_t*>(denoise_state_.data());
  int32_t* staging = device_ == Device::CPU ? step_->data.data() : static_cast<int32_t*>(staging_.data());
  ops::DenoiseShape shape{h.block, h.sub, h.pages, h.rows_full, h.rows_sub};
  const auto body = [&] {
    encode(a, ar, staging, nullptr, dev);
    ops::denoise_decide(TensorView(state, DType::I32, {words}, device_),
                        TensorView(dev.index, DType::I32, {nl, 2}, device_),
                        TensorView(dev.prob, DType::F32, {nl, 2}, device_),
                        TensorView(staging, DType::I32, {int64_t(step_->data.size())}, device_), shape, kind);
  };
  const size_t result_bytes = size_t(denoise::kHeaderWords + h.block) * 4;
  if (device_ == Device::CPU) {  // in order, at once: the guard is a plain check
    if (state[0] == kind) body();
    std::memcpy(result, state, result_bytes);
    return true;
  }
  GraphKey key;
  key.n = n;
  key.n_logits = nl;
  key.output = 3;
  key.variant = kind | h.sub << 8;  // the decide kernel's scratch is sized by S, which n_logits may not tell
  key.pool = denoise_pool_->layer(0, nullptr, 0).base;
  key.pages = h.pages;
  if (speculative) {
    if (!graphs_ || guarded_graphs_failed_ || !graphs_->replay(key, graph_epoch())) return false;
    ++graph_runs_[3];
  } else if (graphs_ && !guarded_graphs_failed_) {
    const GraphCache::Guard guard{state, kind};
    try {
      ++graph_runs_[int(graphs_->run(key, graph_epoch(), body, &guard))];
    } catch (const GuardedCaptureFailed&) {
      guarded_graphs_failed_ = true;  // e.g. a driver without conditional nodes: host-paced, eager
      body();
      ++graph_runs_[0];
    }
  } else {
    body();  // FASTDLLM_CUDA_GRAPHS=0: host-paced, as every other forward
  }
  cuda::download_async(result, state, result_bytes);
  cuda::event_record(event);
  return true;
}

// Every row's first kCandidatePrefix candidates come down with the stats in one
// wait (for a trained model's nucleus that is all of them); longer rows follow.
void Model::download_candidates(const Output& dev, const Output& out, int64_t rows) {
  const int64_t V = config_.vocab_size;
  const size_t pitch = size_t(V) * 8, prefix = size_t(std::min(V, kCandidatePrefix)) * 8;
  cuda::download_async(out.stats, dev.stats, size_t(rows) * 8);
  cuda::download_async(out.count, dev.count, size_t(rows) * 4);
  cuda::copy_rows(out.cand, pitch, dev.cand, pitch, prefix, size_t(rows));
  for (int64_t r = 0; r < rows; ++r)
    if (out.count[r] > kCandidatePrefix) {
      const size_t at = size_t(r) * pitch + prefix;
      copy_bytes(reinterpret_cast<char*>(out.cand) + at, reinterpret_cast<const char*>(dev.cand) + at,
                 size_t(out.count[r] - kCandidatePrefix) * 8, device_);
    }
}

// The forward's launches, reading step data only through `in` (StepInputs
// layout) so that a captured graph of it can be replayed for the next step.
void Model::encode(const ForwardArgs& a, const Arena& ar, const int32_t* in, const uint8_t* mask_p,
                   const Output& out) {
  const StepInputs& st = *step_;
  const auto& c = config_;
  const int64_t n = a.n, H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = int64_t(c.num_heads) * hd, nkv = int64_t(c.num_kv_heads) * hd, qkv = nq + 2 * nkv;
  const int64_t nl = st.n_logits;  // >= a.n_logits on a GPU (bucketed)
  auto view = [&](float* p, std::initializer_list<int64_t> dims) { return TensorView(p, DType::F32, dims, device_); };
  // On a GPU with half weights the GEMM inputs that a norm, SiLU*mul or the
  // attention merge produces are written in the weight type (the rounding the
  // GEMM applies anyway), so no conversion pass runs before those GEMMs; the CPU
  // kernels take fp32.
  const bool half = weight_dtype_ == DType::BF16 || weight_dtype_ == DType::F16;
  const DType operand = device_ != Device::CPU && half ? weight_dtype_ : DType::F32;
  auto operand_view = [&](float* p, std::initializer_list<int64_t> dims) {
    return TensorView(p, operand, dims, device_);
  };
  const TensorView x = view(ar.slot[0], {n, H}), h = operand_view(ar.slot[1], {n, H}),
                   qkv_out = view(ar.slot[2], {n, qkv});
  const TensorView q = view(ar.slot[3], {n, c.num_heads, hd});
  const TensorView attn = operand_view(ar.slot[4], {n, nq}), gate_up = view(ar.slot[5], {n, 2 * I}),
                   act = operand_view(ar.slot[6], {n, I});
  const TensorView none;
  const TensorView positions(const_cast<int32_t*>(in + st.positions()), DType::I32, {n}, device_);
  const TensorView inv_freq = inv_freq_.view(DType::F32, {hd / 2});
  // Every query's key limit is explicit; the attention bound is then the
  // table's fixed capacity (or n_kv where a mask fixes the row stride).
  const TensorView kv_limit(const_cast<int32_t*>(in + st.limits()), DType::I32, {n}, device_);
  const int64_t attn_n_kv = mask_p ? a.n_kv : st.pages * a.pool->geometry().page_size;
  const TensorView mask =
      mask_p ? TensorView(const_cast<uint8_t*>(mask_p), DType::U8, {n, a.n_kv}, device_) : none;
  const float scale = 1.0f / std::sqrt(float(hd));

  using profiler::ScopedOpTimer;
  {
    ScopedOpTimer t("embedding");
    ops::embedding(weight_view(embed_, {c.vocab_size, H}, packed_ && c.tie_word_embeddings),
                   TensorView(const_cast<int32_t*>(in + st.tokens()), DType::I32, {n}, device_), x);
  }
  for (int li = 0; li < c.num_layers; ++li) {
    const Layer& L = layers_[size_t(li)];
    const PagedKV kv = a.pool->layer(li, in + st.table(), int(st.pages));
    {
      ScopedOpTimer t("rms_norm");
      ops::rms_norm(x, L.in_norm.view(DType::F32, {H}), c.rms_norm_eps, h);
    }
    {
      ScopedOpTimer t("linear_qkv");
      ops::linear(h, weight_view(L.qkv_w, {qkv, H}, packed_), L.qkv_b.view(DType::F32, {qkv}), none, qkv_out);
    }
    {
      ScopedOpTimer t("rope_and_kv_write");
      ops::qkv_rope_append(qkv_out, positions, inv_freq, kv, st.slots_from_positions ? ops::kSlotsFromPositions : a.write_start, q);
    }
    {
      ScopedOpTimer t("attention");
      ops::attention(q, kv, attn_n_kv, scale, kv_limit, mask, attn);
    }
    {
      ScopedOpTimer t("linear_o");
      ops::linear(attn, weight_view(L.o_w, {H, nq}, packed_), none, x, x);
    }
    {
      ScopedOpTimer t("rms_norm");
      ops::rms_norm(x, L.post_norm.view(DType::F32, {H}), c.rms_norm_eps, h);
    }
    if (fused_mlp_) {
      ScopedOpTimer t("linear_gate_up_silu_mul");
      ops::linear_silu_mul(h, weight_view(L.gate_up_w, {2 * I, H}, packed_), act);
    } else {
      {
        ScopedOpTimer t("linear_gate_up");
        ops::linear(h, weight_view(L.gate_up_w, {2 * I, H}, packed_), none, none, gate_up);
      }
      ScopedOpTimer t("silu_mul");
      ops::silu_mul(gate_up, act);
    }
    {
      ScopedOpTimer t("linear_down");
      ops::linear(act, weight_view(L.down_w, {H, I}, packed_), none, x, x);
    }
  }
  if (nl == 0) return;
  const TensorView last = view(ar.slot[7], {nl, H});
  {
    ScopedOpTimer t("final_norm");
    ops::gather_rows(x, TensorView(const_cast<int32_t*>(in + st.rows()), DType::I32, {nl}, device_), last);
    ops::rms_norm(last, final_norm_.view(DType::F32, {H}), c.rms_norm_eps, last);
  }
  const TensorView head =
      weight_view(c.tie_word_embeddings ? embed_ : lm_head_, {c.vocab_size, H}, packed_);
  if (out.index) {
    ScopedOpTimer t("lm_head_top2");
    ops::lm_head_top2(last, head, TensorView(out.index, DType::I32, {nl, 2}, device_),
                      TensorView(out.prob, DType::F32, {nl, 2}, device_));
  } else {
    ScopedOpTimer t("lm_head");
    const TensorView logits(out.logits, DType::F32, {nl, c.vocab_size}, device_);
    ops::linear(last, head, none, none, logits);
    if (out.cand) {
      ScopedOpTimer ts("sampling_candidates");
      ops::sampling_candidates(logits, out.sampling, TensorView(out.stats, DType::F32, {nl, 2}, device_),
                               TensorView(out.count, DType::I32, {nl}, device_),
                               TensorView(out.cand, DType::I32, {nl, c.vocab_size, 2}, device_));
    }
  }
}

}  // namespace fastdllm
