#include "model/qwen2_weights.h"

#include <cmath>
#include <cstring>

#include "core/device_memory.h"
#include "fastdllm/error.h"
#include "core/convert.h"

namespace fastdllm {

namespace {

// Parses "model.layers.{i}.{rest}" into (i, rest); false for other names.
bool split_layer_name(const std::string& name, int* layer, std::string* rest) {
  static const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return false;
  const std::string idx = name.substr(prefix.size(), dot - prefix.size());
  if (idx.empty() || idx.size() > 9 || idx.find_first_not_of("0123456789") != std::string::npos) return false;
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

Qwen2Weights::Qwen2Weights(const ModelConfig& config, DType dtype, Device device)
    : config_(config), dtype_(dtype), device_(device) {
  FDL_CHECK(is_float(dtype), "model dtype must be float32, float16 or bfloat16, got ", dtype_name(dtype));
  const auto& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t qkv = int64_t(c.num_heads + 2 * c.num_kv_heads) * hd;
  packing_ = ops::weight_packing(device, dtype, I);
  const bool packed = packing_.packed;
  const bool pack_embed = packed && c.tie_word_embeddings;  // the tied embedding is the lm_head
  embed_ = matrix_buffer(c.vocab_size, H, pack_embed);
  if (!c.tie_word_embeddings) lm_head_ = matrix_buffer(c.vocab_size, H, packed);
  final_norm_ = Buffer(size_t(H) * 4, device);
  layers_.resize(size_t(c.num_layers));
  for (auto& L : layers_) {
    L.qkv_w = matrix_buffer(qkv, H, packed);
    L.qkv_b = Buffer(size_t(qkv) * 4, device);
    L.o_w = matrix_buffer(H, c.num_heads * hd, packed);
    L.gate_up_w = matrix_buffer(2 * I, H, packed);
    L.down_w = matrix_buffer(H, I, packed);
    L.in_norm = Buffer(size_t(H) * 4, device);
    L.post_norm = Buffer(size_t(H) * 4, device);
  }
  // inv_freq = 1 / theta^(2i/hd) in fp32, as HF computes it.
  inv_freq_ = Buffer(size_t(hd / 2) * 4, device);
  std::vector<float> f(size_t(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i) f[size_t(i)] = 1.0f / std::pow(c.rope_theta, float(2 * i) / float(hd));
  copy_bytes(inv_freq_.data(), f.data(), f.size() * 4, device);
  expected_ = expected_for(config_);
}

std::map<std::string, std::vector<int64_t>> Qwen2Weights::expected_for(const ModelConfig& c) {
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

void Qwen2Weights::set(const std::string& name, const void* data, DType src, const std::vector<int64_t>& shape) {
  const auto it = expected_.find(name);
  FDL_CHECK(it != expected_.end(), "unexpected tensor '", name, "' for this model config");
  FDL_CHECK(is_float(src), "tensor '", name, "': dtype ", dtype_name(src), " is not a float type");
  FDL_CHECK(shape == it->second, "tensor '", name, "' has shape ", shape_str(shape), ", expected ",
            shape_str(it->second));
  FDL_CHECK(!ready_, "tensor '", name, "': the model is already finalized");
  const auto& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q = int64_t(c.num_heads) * hd, kv = int64_t(c.num_kv_heads) * hd;
  const bool packed = packing_.packed;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  // Every path below reads the tensor once, and that pass counts its non-finite
  // values: NaN or inf weights would otherwise decode as finite garbage.
  auto finite = [&](int64_t bad) {
    FDL_CHECK(bad == 0, "tensor '", name, "' holds ", bad, " non-finite values (NaN or inf) of ", n,
              "; the checkpoint is corrupt");
  };
  auto put = [&](const Buffer& dst, int64_t elem_offset, DType dt) {
    char* d = static_cast<char*>(dst.data()) + size_t(elem_offset) * dtype_size(dt);
    if (device_ == Device::CPU) return finite(convert_elements(data, src, d, dt, n));
    std::vector<char> host(size_t(n) * dtype_size(dt));  // convert on the host, then upload
    finite(convert_elements(data, src, host.data(), dt, n));
    copy_bytes(d, host.data(), host.size(), device_);
  };
  // The tensor as bf16 rows, for packing (converted once if the checkpoint has another dtype).
  std::vector<uint16_t> tmp;
  auto bf16_rows = [&]() -> const uint16_t* {
    if (src == DType::BF16) {
      finite(count_non_finite(data, src, n));
      return static_cast<const uint16_t*>(data);
    }
    tmp.resize(size_t(n));
    finite(convert_elements(data, src, tmp.data(), DType::BF16, n));
    return tmp.data();
  };
  // A matrix block of rows [row0, row0 + shape[0]) of a weight with k columns.
  auto put_rows = [&](const Buffer& dst, int64_t row0, int64_t k, bool pack) {
    if (!pack) return put(dst, row0 * k, dtype_);
    ops::pack_weight_rows(bf16_rows(), shape[0], row0, k, static_cast<uint16_t*>(dst.data()));
  };
  // gate (row0 0) or up (row0 I) into the fused [gate; up] matrix.
  auto put_gate_up = [&](const Buffer& dst, int64_t row0) {
    if (!packing_.fused_mlp) return put_rows(dst, row0, H, packed);
    ops::pack_gate_up_rows(bf16_rows(), shape[0], row0, I, H, static_cast<uint16_t*>(dst.data()));
  };
  const bool pack_embed = packed && c.tie_word_embeddings;
  int li;
  std::string rest;
  if (name == "model.embed_tokens.weight") {
    put_rows(embed_, 0, H, pack_embed);
  } else if (name == "lm_head.weight") {
    put_rows(lm_head_, 0, H, packed);
  } else if (name == "model.norm.weight") {
    put(final_norm_, 0, DType::F32);
  } else if (split_layer_name(name, &li, &rest)) {
    LayerBuffers& L = layers_[size_t(li)];
    if (rest == "input_layernorm.weight") put(L.in_norm, 0, DType::F32);
    else if (rest == "post_attention_layernorm.weight") put(L.post_norm, 0, DType::F32);
    else if (rest == "self_attn.q_proj.weight") put_rows(L.qkv_w, 0, H, packed);
    else if (rest == "self_attn.k_proj.weight") put_rows(L.qkv_w, q, H, packed);
    else if (rest == "self_attn.v_proj.weight") put_rows(L.qkv_w, q + kv, H, packed);
    else if (rest == "self_attn.q_proj.bias") put(L.qkv_b, 0, DType::F32);
    else if (rest == "self_attn.k_proj.bias") put(L.qkv_b, q, DType::F32);
    else if (rest == "self_attn.v_proj.bias") put(L.qkv_b, q + kv, DType::F32);
    else if (rest == "self_attn.o_proj.weight") put_rows(L.o_w, 0, q, packed);
    else if (rest == "mlp.gate_proj.weight") put_gate_up(L.gate_up_w, 0);
    else if (rest == "mlp.up_proj.weight") put_gate_up(L.gate_up_w, I);
    else if (rest == "mlp.down_proj.weight") put_rows(L.down_w, 0, I, packed);
  }
  loaded_.insert(name);
}

void Qwen2Weights::finalize() {
  for (const auto& kv : expected_)
    FDL_CHECK(loaded_.count(kv.first), "missing tensor '", kv.first, "' (no shard of the checkpoint provides it)");
  ready_ = true;
}

Buffer Qwen2Weights::matrix_buffer(int64_t rows, int64_t cols, bool packed) const {
  if (!packed) return Buffer(size_t(rows * cols) * dtype_size(dtype_), device_);
  Buffer b(size_t(ops::packed_weight_elems(rows, cols)) * 2, device_);
  std::memset(b.data(), 0, b.size());  // zero padding (packing happens on the CPU only)
  return b;
}

TensorView Qwen2Weights::matrix_view(const Buffer& b, int64_t rows, int64_t cols, bool packed) const {
  TensorView v(b.data(), dtype_, {rows, cols}, device_);
  v.packed = packed;
  return v;
}

TensorView Qwen2Weights::embed() const {
  return matrix_view(embed_, config_.vocab_size, config_.hidden_size, packing_.packed && config_.tie_word_embeddings);
}

TensorView Qwen2Weights::lm_head() const {
  if (config_.tie_word_embeddings) return embed();
  return matrix_view(lm_head_, config_.vocab_size, config_.hidden_size, packing_.packed);
}

Qwen2Weights::Layer Qwen2Weights::layer(int i) const {
  const auto& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t nq = int64_t(c.num_heads) * hd, qkv = nq + 2 * int64_t(c.num_kv_heads) * hd;
  const LayerBuffers& L = layers_[size_t(i)];
  const bool p = packing_.packed;
  return Layer{matrix_view(L.qkv_w, qkv, H, p), L.qkv_b.view(DType::F32, {qkv}), matrix_view(L.o_w, H, nq, p),
               matrix_view(L.gate_up_w, 2 * I, H, p), matrix_view(L.down_w, H, I, p),
               L.in_norm.view(DType::F32, {H}), L.post_norm.view(DType::F32, {H})};
}

}  // namespace fastdllm
