// The Qwen2 checkpoint's tensors as the forward reads them: which names and
// shapes a config expects, and one buffer per fused matrix on the model's
// device in the compute dtype. q/k/v and gate/up are fused into one matrix each
// so that a forward reads every weight once; bf16 matrices on the CPU are
// repacked into GEMM panels at load (ops::weight_packing).
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
  Qwen2Weights(const ModelConfig& config, DType dtype, Device device);

  const std::map<std::string, std::vector<int64_t>>& expected() const { return expected_; }
  static std::map<std::string, std::vector<int64_t>> expected_for(const ModelConfig& config);
  void set(const std::string& name, const void* data, DType src_dtype, const std::vector<int64_t>& shape);
  void finalize();
  bool ready() const { return ready_; }
  const ops::WeightPacking& packing() const { return packing_; }

  struct Layer {
    TensorView qkv_w, qkv_b, o_w, gate_up_w, down_w, in_norm, post_norm;
  };
  // Views of the stored weights, shaped as the ops take them.
  TensorView embed() const;
  TensorView lm_head() const;  // the embedding when tied
  TensorView final_norm() const { return final_norm_.view(DType::F32, {config_.hidden_size}); }
  TensorView inv_freq() const { return inv_freq_.view(DType::F32, {config_.head_dim / 2}); }
  Layer layer(int i) const;

 private:
  struct LayerBuffers {
    Buffer qkv_w, qkv_b, o_w, gate_up_w, down_w, in_norm, post_norm;
  };
  Buffer matrix_buffer(int64_t rows, int64_t cols, bool packed) const;
  TensorView matrix_view(const Buffer& b, int64_t rows, int64_t cols, bool packed) const;

  ModelConfig config_;
  DType dtype_;
  Device device_;
  ops::WeightPacking packing_;
  Buffer embed_, lm_head_, final_norm_, inv_freq_;
  std::vector<LayerBuffers> layers_;
  std::map<std::string, std::vector<int64_t>> expected_;  // name -> shape, from the config once
  std::set<std::string> loaded_;
  bool ready_ = false;
};

}  // namespace fastdllm
