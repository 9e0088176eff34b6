// The Qwen2 checkpoint's tensors as the forward reads them: which names and
// shapes a config expects, and one buffer per fused matrix on the model's
// device in the compute dtype. q/k/v and gate/up are fused into one matrix each
// so that a forward reads every weight once; bf16 matrices on the CPU are
// repacked into GEMM panels at load (ops::weight_packing). The layers' matrices
// may be in an integer format instead (fastdllm/weight_format.h): their codes,
// scales and zero points arrive in the canonical form and are repacked for the
// device; the embedding, lm_head, norms and biases stay float.
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fastdllm/model.h"
#include "fastdllm/tensor.h"

namespace fastdllm {

class Qwen2Weights {
 public:
  Qwen2Weights(const ModelConfig& config, DType dtype, Device device, const LayerWeightFormat& layer_format);

  const std::map<std::string, std::vector<int64_t>>& expected() const { return expected_; }
  static std::map<std::string, std::vector<int64_t>> expected_for(const ModelConfig& config);
  void set(const std::string& name, const void* data, DType src_dtype, const std::vector<int64_t>& shape);
  // One layer matrix in an integer format: canonical codes q [rows, K] (one per
  // byte, inputs in perm's order), scales / zeros [rows, K / group] fp32, perm
  // [K] or null; name is the checkpoint's "<module>.weight".
  void set_quantized(const std::string& name, const uint8_t* q, const float* scales, const float* zeros,
                     const int32_t* perm, const std::vector<int64_t>& shape);
  void finalize();
  bool ready() const { return ready_; }
  const ops::WeightPacking& packing() const { return packing_; }
  // gate/up is one interleaved matrix with SiLU*mul in its GEMM's epilogue.
  bool fused_mlp() const { return fused_mlp_; }
  const LayerWeightFormat& layer_format() const { return layer_format_; }
  // Bytes the stored weights take (all matrices, norms and biases).
  int64_t storage_bytes() const;

  struct Layer {
    WeightView qkv_w, o_w, gate_up_w, down_w;
    TensorView qkv_b, in_norm, post_norm;
  };
  // Views of the stored weights, shaped as the ops take them.
  TensorView embed() const;
  WeightView lm_head() const;  // the embedding when tied and dense
  TensorView final_norm() const { return final_norm_.view(DType::F32, {config_.hidden_size}); }
  TensorView inv_freq() const { return inv_freq_.view(DType::F32, {config_.head_dim / 2}); }
  Layer layer(int i) const;

 private:
  // A layer matrix: dense values, or integer codes with their scales, s * z and
  // input order (perm_from: the part that set it; fused parts must agree).
  struct Matrix {
    Buffer values, scales, zero_scales, perm, aux;  // aux: the backend's extra parameters
    WeightFormat format = WeightFormat::Dense;
    int64_t rows = 0, cols = 0, group = 0;
    std::string perm_from;
    bool perm_set = false;
    // Off the CPU: the packed codes are built here, uploaded at finalize().
    std::vector<uint8_t> host_codes, host_aux;
    std::vector<float> host_scales, host_zero_scales;
  };
  struct LayerBuffers {
    Matrix qkv_w, o_w, gate_up_w, down_w;
    Buffer qkv_b, in_norm, post_norm;
  };
  Buffer matrix_buffer(int64_t rows, int64_t cols, bool packed) const;
  TensorView matrix_view(const Buffer& b, int64_t rows, int64_t cols, bool packed) const;
  Matrix layer_matrix(int64_t rows, int64_t cols) const;
  Matrix quantized_matrix(int64_t rows, int64_t cols, WeightFormat format, int64_t group_size) const;
  WeightView weight_view(const Matrix& m) const;
  void set_fp8(const std::string& name, Matrix& m, const uint8_t* q, const float* scales, const int32_t* perm,
               int64_t rows, int64_t row0);
  // Where set_quantized packs a matrix: its buffers on the CPU, its host staging otherwise.
  WeightView packing_view(Matrix& m) const;
  // The matrix a layer tensor name goes to, its first row there, and whether
  // it is part of the gate/up pair; null for other names.
  Matrix* locate(const std::string& name, int64_t* row0, bool* gate_up);

  ModelConfig config_;
  DType dtype_;
  Device device_;
  LayerWeightFormat layer_format_;
  ops::WeightPacking packing_;
  bool fused_mlp_ = false;
  Buffer embed_, lm_head_, final_norm_, inv_freq_;
  Matrix lm_head_q_;  // the lm_head in an integer format (layer_format_.lm_head), else unused
  std::vector<LayerBuffers> layers_;
  std::map<std::string, std::vector<int64_t>> expected_;  // name -> shape, from the config once
  std::set<std::string> loaded_;
  bool ready_ = false;
};

}  // namespace fastdllm
