#include "model/qwen2_weights.h"

#include <cmath>
#include <algorithm>
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

Qwen2Weights::Qwen2Weights(const ModelConfig& config, DType dtype, Device device, const LayerWeightFormat& layer_format)
    : config_(config), dtype_(dtype), device_(device), layer_format_(layer_format) {
  FDL_CHECK(is_float(dtype), "model dtype must be float32, float16 or bfloat16, got ", dtype_name(dtype));
  FDL_CHECK(layer_format.group_size >= 0, "weight group size must be >= 0, got ", layer_format.group_size);
  const auto& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t qkv = int64_t(c.num_heads + 2 * c.num_kv_heads) * hd;
  packing_ = ops::weight_packing(device, dtype, I);
  const bool packed = packing_.packed;
  FDL_CHECK(layer_format.format != WeightFormat::Fp8 || device == Device::CUDA,
            "fp8 layers (W8A8) run on CUDA only; on the CPU an fp8 checkpoint loads dequantized");
  const bool integer = is_quantized_format(layer_format.format);
  fused_mlp_ = integer ? device == Device::CPU && I % 16 == 0 : packing_.fused_mlp;
  const bool pack_embed = packed && c.tie_word_embeddings;  // the tied embedding is the lm_head
  embed_ = matrix_buffer(c.vocab_size, H, pack_embed);
  FDL_CHECK(layer_format.lm_head == WeightFormat::Dense || layer_format.lm_head == WeightFormat::Int8,
            "the lm_head format must be dense or int8, got ", format_traits(layer_format.lm_head).name);
  if (layer_format.lm_head != WeightFormat::Dense)  // a quantized copy, also of a tied embedding
    lm_head_q_ = quantized_matrix(c.vocab_size, H, layer_format.lm_head, 0);
  else if (!c.tie_word_embeddings)
    lm_head_ = matrix_buffer(c.vocab_size, H, packed);
  final_norm_ = Buffer(size_t(H) * 4, device);
  layers_.resize(size_t(c.num_layers));
  for (auto& L : layers_) {
    L.qkv_w = layer_matrix(qkv, H);
    L.qkv_b = Buffer(size_t(qkv) * 4, device);
    L.o_w = layer_matrix(H, c.num_heads * hd);
    L.gate_up_w = layer_matrix(2 * I, H);
    L.down_w = layer_matrix(H, I);
    L.in_norm = Buffer(size_t(H) * 4, device);
    L.post_norm = Buffer(size_t(H) * 4, device);
  }
  // inv_freq = 1 / theta^(2i/hd) in fp32, as HF computes it.
  inv_freq_ = Buffer(size_t(hd / 2) * 4, device);
  std::vector<float> f(size_t(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i) f[size_t(i)] = 1.0f / std::pow(c.rope_theta, float(2 * i) / float(hd));
  copy_bytes(inv_freq_.data(), f.data(), f.size() * 4, device);
  expected_ = expected_for(config_);
  if (layer_format.lm_head != WeightFormat::Dense) expected_["lm_head.weight"] = {c.vocab_size, H};
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
  const bool pack_embed = packed && c.tie_word_embeddings;
  int li;
  std::string rest;
  int64_t row0 = 0;
  bool gate_up = false;
  if (name == "model.embed_tokens.weight") {
    put_rows(embed_, 0, H, pack_embed);
  } else if (name == "lm_head.weight") {
    FDL_CHECK(layer_format_.lm_head == WeightFormat::Dense, "tensor 'lm_head.weight': the model's lm_head is ",
              format_traits(layer_format_.lm_head).name, "; it must come as quantized codes");
    put_rows(lm_head_, 0, H, packed);
  } else if (name == "model.norm.weight") {
    put(final_norm_, 0, DType::F32);
  } else if (Matrix* m = locate(name, &row0, &gate_up)) {
    FDL_CHECK(!is_quantized_format(m->format), "tensor '", name, "': the model's layers are ",
              format_traits(m->format).name, "; this matrix must come as quantized codes");
    if (gate_up && fused_mlp_)
      ops::pack_gate_up_rows(bf16_rows(), shape[0], row0, I, H, static_cast<uint16_t*>(m->values.data()));
    else
      put_rows(m->values, row0, m->cols, packed);
  } else if (split_layer_name(name, &li, &rest)) {
    LayerBuffers& L = layers_[size_t(li)];
    if (rest == "input_layernorm.weight") put(L.in_norm, 0, DType::F32);
    else if (rest == "post_attention_layernorm.weight") put(L.post_norm, 0, DType::F32);
    else if (rest == "self_attn.q_proj.bias") put(L.qkv_b, 0, DType::F32);
    else if (rest == "self_attn.k_proj.bias") put(L.qkv_b, q, DType::F32);
    else if (rest == "self_attn.v_proj.bias") put(L.qkv_b, q + kv, DType::F32);
  }
  loaded_.insert(name);
}

Qwen2Weights::Matrix* Qwen2Weights::locate(const std::string& name, int64_t* row0, bool* gate_up) {
  int li;
  std::string rest;
  *gate_up = false;
  *row0 = 0;
  if (name == "lm_head.weight") return layer_format_.lm_head != WeightFormat::Dense ? &lm_head_q_ : nullptr;
  if (!split_layer_name(name, &li, &rest)) return nullptr;
  const auto& c = config_;
  const int64_t q = int64_t(c.num_heads) * c.head_dim, kv = int64_t(c.num_kv_heads) * c.head_dim;
  LayerBuffers& L = layers_[size_t(li)];
  if (rest == "self_attn.q_proj.weight") return &L.qkv_w;
  if (rest == "self_attn.k_proj.weight") return *row0 = q, &L.qkv_w;
  if (rest == "self_attn.v_proj.weight") return *row0 = q + kv, &L.qkv_w;
  if (rest == "self_attn.o_proj.weight") return &L.o_w;
  if (rest == "mlp.gate_proj.weight") return *gate_up = true, &L.gate_up_w;
  if (rest == "mlp.up_proj.weight") return *row0 = c.intermediate_size, *gate_up = true, &L.gate_up_w;
  if (rest == "mlp.down_proj.weight") return &L.down_w;
  return nullptr;
}

void Qwen2Weights::set_quantized(const std::string& name, const uint8_t* q, const float* scales, const float* zeros,
                                 const int32_t* perm, const std::vector<int64_t>& shape) {
  const auto it = expected_.find(name);
  FDL_CHECK(it != expected_.end(), "unexpected tensor '", name, "' for this model config");
  FDL_CHECK(!ready_, "tensor '", name, "': the model is already finalized");
  int64_t row0 = 0;
  bool gate_up = false;
  Matrix* m = locate(name, &row0, &gate_up);
  FDL_CHECK(m != nullptr, "tensor '", name,
            "' is not a layer matrix; only q/k/v/o, gate/up/down (and an int8 lm_head) are quantized");
  FDL_CHECK(is_quantized_format(m->format), "tensor '", name, "': quantized codes for a dense matrix");
  FDL_CHECK(shape == it->second, "tensor '", name, "' has shape ", shape_str(shape), ", expected ",
            shape_str(it->second));
  FDL_CHECK(!loaded_.count(name), "tensor '", name, "' was already set");
  const int64_t rows = shape[0], k = shape[1], groups = k / m->group;
  if (m->format == WeightFormat::Fp8) {
    set_fp8(name, *m, q, scales, perm, rows, row0);
    return;
  }
  const int bits = format_traits(m->format).bits;
  // Codes outside the format would decode to garbage (an int4 kernel reads 4 bits).
  const uint8_t top = uint8_t((1 << bits) - 1);
  for (int64_t i = 0; i < rows * k; ++i)
    FDL_CHECK(q[i] <= top, "tensor '", name, "': code ", int(q[i]), " at [", i / k, ", ", i % k,
              "] does not fit in ", bits, " bits");
  for (int64_t i = 0; i < rows * groups; ++i) {
    FDL_CHECK(std::isfinite(scales[i]), "tensor '", name, "': scale [", i / groups, ", ", i % groups,
              "] is not finite");
    FDL_CHECK(std::isfinite(zeros[i]), "tensor '", name, "': zero point [", i / groups, ", ", i % groups,
              "] is not finite");
  }
  if (perm) {
    std::vector<char> seen(size_t(k), 0);
    for (int64_t j = 0; j < k; ++j) {
      FDL_CHECK(perm[j] >= 0 && perm[j] < k && !seen[size_t(perm[j])], "tensor '", name,
                "': the input order (act-order g_idx) is not a permutation of ", k, " inputs");
      seen[size_t(perm[j])] = 1;
    }
  }
  // q/k/v and gate/up share one input order: they are one GEMM over one copy of x.
  if (m->perm_set) {
    const bool same = perm ? m->perm.size() > 0 && std::equal(perm, perm + k, static_cast<const int32_t*>(m->perm.data()))
                           : m->perm.size() == 0;
    FDL_CHECK(same, "tensor '", name, "': its input order (g_idx) differs from that of '", m->perm_from,
              "'; fused matrices need one act-order permutation");
  } else {
    m->perm_set = true;
    m->perm_from = name;
    if (perm) {
      m->perm = Buffer(size_t(k) * 4, device_);
      copy_bytes(m->perm.data(), perm, size_t(k) * 4, device_);
    }
  }
  ops::pack_int_weight_rows(device_, q, scales, zeros, rows, row0,
                            gate_up && fused_mlp_ ? config_.intermediate_size : 0, packing_view(*m));
  loaded_.insert(name);
}

// Fp8 rows: the E4M3 bytes as they are and one scale per row (no zero point,
// no act-order), staged on the host like the integer codes.
void Qwen2Weights::set_fp8(const std::string& name, Matrix& m, const uint8_t* q, const float* scales,
                           const int32_t* perm, int64_t rows, int64_t row0) {
  FDL_CHECK(perm == nullptr, "tensor '", name, "': fp8 weights have no act-order permutation");
  const int64_t k = m.cols;
  for (int64_t i = 0; i < rows * k; ++i)
    FDL_CHECK((q[i] & 0x7F) != 0x7F, "tensor '", name, "': byte [", i / k, ", ", i % k, "] is an E4M3 NaN");
  for (int64_t r = 0; r < rows; ++r)
    FDL_CHECK(std::isfinite(scales[r]) && scales[r] > 0.f, "tensor '", name, "': scale [", r,
              "] must be finite and > 0, got ", scales[r]);
  std::memcpy(m.host_codes.data() + row0 * k, q, size_t(rows * k));
  std::memcpy(m.host_scales.data() + row0, scales, size_t(rows) * 4);
  loaded_.insert(name);
}

void Qwen2Weights::finalize() {
  for (const auto& kv : expected_)
    FDL_CHECK(loaded_.count(kv.first), "missing tensor '", kv.first, "' (no shard of the checkpoint provides it)");
  std::vector<Matrix*> staged{&lm_head_q_};
  for (LayerBuffers& L : layers_)
    for (Matrix* m : {&L.qkv_w, &L.o_w, &L.gate_up_w, &L.down_w}) staged.push_back(m);
  for (Matrix* m : staged) {  // integer matrices packed on the host go to the device once, whole
    if (m->host_codes.empty()) continue;
    copy_bytes(m->values.data(), m->host_codes.data(), m->host_codes.size(), device_);
    copy_bytes(m->scales.data(), m->host_scales.data(), m->host_scales.size() * 4, device_);
    if (!m->host_zero_scales.empty())
      copy_bytes(m->zero_scales.data(), m->host_zero_scales.data(), m->host_zero_scales.size() * 4, device_);
    if (!m->host_aux.empty()) copy_bytes(m->aux.data(), m->host_aux.data(), m->host_aux.size(), device_);
    std::vector<uint8_t>().swap(m->host_codes);
    std::vector<float>().swap(m->host_scales);
    std::vector<float>().swap(m->host_zero_scales);
    std::vector<uint8_t>().swap(m->host_aux);
  }
  ready_ = true;
}

Qwen2Weights::Matrix Qwen2Weights::layer_matrix(int64_t rows, int64_t cols) const {
  if (!is_quantized_format(layer_format_.format)) {
    Matrix m;
    m.rows = rows;
    m.cols = cols;
    m.values = matrix_buffer(rows, cols, packing_.packed);
    return m;
  }
  return quantized_matrix(rows, cols, layer_format_.format, layer_format_.group_size);
}

Qwen2Weights::Matrix Qwen2Weights::quantized_matrix(int64_t rows, int64_t cols, WeightFormat format,
                                                    int64_t group_size) const {
  Matrix m;
  m.rows = rows;
  m.cols = cols;
  m.format = format;
  if (format == WeightFormat::Fp8) {  // CUDA: [rows, cols] E4M3 bytes, a scale per row
    m.group = cols;
    m.values = Buffer(size_t(rows * cols), device_);
    m.scales = Buffer(size_t(rows) * 4, device_);
    m.host_codes.assign(size_t(rows * cols), 0);
    m.host_scales.assign(size_t(rows), 0.f);
    return m;
  }
  m.group = group_size ? group_size : cols;
  FDL_CHECK(m.group % 2 == 0 && cols % m.group == 0, "weight group size ", m.group,
            " must be even and divide every layer matrix's in_features (", cols, " does not)");
  const ops::IntWeightLayout lay =
      ops::int_weight_layout(device_, format, rows, cols, m.group);
  m.values = Buffer(size_t(lay.code_bytes), device_);
  m.scales = Buffer(size_t(lay.param_floats) * 4, device_);
  m.zero_scales = Buffer(size_t(lay.param_floats) * 4, device_);
  if (lay.aux_bytes) m.aux = Buffer(size_t(lay.aux_bytes), device_);
  if (device_ == Device::CPU) {
    for (Buffer* b : {&m.values, &m.scales, &m.zero_scales}) std::memset(b->data(), 0, b->size());
  } else {
    m.host_codes.assign(size_t(lay.code_bytes), 0);
    m.host_scales.assign(size_t(lay.param_floats), 0.f);
    m.host_zero_scales.assign(size_t(lay.param_floats), 0.f);
    m.host_aux.assign(size_t(lay.aux_bytes), 0);
  }
  return m;
}

WeightView Qwen2Weights::packing_view(Matrix& m) const {
  WeightView w = weight_view(m);
  if (device_ != Device::CPU) {
    w.values = TensorView(m.host_codes.data(), DType::U8, {m.rows, m.cols});
    const int64_t nf = int64_t(m.host_scales.size());
    w.scales = TensorView(m.host_scales.data(), DType::F32, {nf});
    w.zero_scales = TensorView(m.host_zero_scales.data(), DType::F32, {nf});
    if (!m.host_aux.empty()) w.aux = TensorView(m.host_aux.data(), DType::U8, {int64_t(m.host_aux.size())});
  }
  return w;
}

WeightView Qwen2Weights::weight_view(const Matrix& m) const {
  if (!is_quantized_format(m.format)) return matrix_view(m.values, m.rows, m.cols, packing_.packed);
  WeightView w;
  if (m.format == WeightFormat::Fp8) {
    w.values = TensorView(m.values.data(), DType::U8, {m.rows, m.cols}, device_);
    w.format = WeightFormat::Fp8;
    w.group_size = m.cols;
    w.scales = TensorView(m.scales.data(), DType::F32, {m.rows}, device_);
    return w;
  }
  w.values = TensorView(m.values.data(), DType::U8, {m.rows, m.cols}, device_);
  w.format = m.format;
  w.group_size = m.group;
  const int64_t nf = int64_t(m.scales.size() / 4);
  w.scales = TensorView(m.scales.data(), DType::F32, {nf}, device_);
  w.zero_scales = TensorView(m.zero_scales.data(), DType::F32, {nf}, device_);
  if (m.perm.size()) w.perm = TensorView(m.perm.data(), DType::I32, {m.cols}, device_);
  if (m.aux.size()) w.aux = TensorView(m.aux.data(), DType::U8, {int64_t(m.aux.size())}, device_);
  return w;
}

int64_t Qwen2Weights::storage_bytes() const {
  int64_t b = int64_t(embed_.size() + lm_head_.size() + final_norm_.size() + lm_head_q_.values.size() +
                      lm_head_q_.scales.size() + lm_head_q_.zero_scales.size());
  for (const LayerBuffers& L : layers_) {
    for (const Matrix* m : {&L.qkv_w, &L.o_w, &L.gate_up_w, &L.down_w})
      b += int64_t(m->values.size() + m->scales.size() + m->zero_scales.size() + m->perm.size() + m->aux.size());
    b += int64_t(L.qkv_b.size() + L.in_norm.size() + L.post_norm.size());
  }
  return b;
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

WeightView Qwen2Weights::lm_head() const {
  if (layer_format_.lm_head != WeightFormat::Dense) return weight_view(lm_head_q_);
  if (config_.tie_word_embeddings) return embed();
  return matrix_view(lm_head_, config_.vocab_size, config_.hidden_size, packing_.packed);
}

Qwen2Weights::Layer Qwen2Weights::layer(int i) const {
  const auto& c = config_;
  const int64_t H = c.hidden_size, qkv = int64_t(c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  const LayerBuffers& L = layers_[size_t(i)];
  return Layer{weight_view(L.qkv_w), weight_view(L.o_w), weight_view(L.gate_up_w), weight_view(L.down_w),
               L.qkv_b.view(DType::F32, {qkv}), L.in_norm.view(DType::F32, {H}), L.post_norm.view(DType::F32, {H})};
}

}  // namespace fastdllm
