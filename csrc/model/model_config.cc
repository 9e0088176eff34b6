#include "fastdllm/error.h"
#include "fastdllm/model.h"

namespace fastdllm {

void ModelConfig::validate() const {
  auto positive = [](int64_t v, const char* key) {
    FDL_CHECK(v > 0, "config.json: '", key, "' must be a positive integer, got ", v);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_layers, "num_hidden_layers");
  positive(num_heads, "num_attention_heads");
  positive(num_kv_heads, "num_key_value_heads");
  positive(head_dim, "head_dim");
  FDL_CHECK(num_heads % num_kv_heads == 0, "config.json: 'num_attention_heads' (", num_heads,
            ") must be a multiple of 'num_key_value_heads' (", num_kv_heads, ")");
  FDL_CHECK(head_dim % 2 == 0, "config.json: head_dim (", head_dim, ") must be even for RoPE");
  FDL_CHECK(rope_theta > 0.f, "config.json: 'rope_theta' must be > 0, got ", rope_theta);
  FDL_CHECK(rms_norm_eps >= 0.f, "config.json: 'rms_norm_eps' must be >= 0, got ", rms_norm_eps);
}

}  // namespace fastdllm
