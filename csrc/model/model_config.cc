#include <cmath>

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
  FDL_CHECK(std::isfinite(rope_theta) && rope_theta > 0.f, "config.json: 'rope_theta' must be finite and > 0, got ",
            rope_theta);
  FDL_CHECK(std::isfinite(rms_norm_eps) && rms_norm_eps >= 0.f && rms_norm_eps < 1.f,
            "config.json: 'rms_norm_eps' must be in [0, 1), got ", rms_norm_eps);
  // Sizes whose products index int64 element counts and int32 token ids.
  FDL_CHECK(vocab_size < (int64_t(1) << 31) && hidden_size < (int64_t(1) << 24) &&
                intermediate_size < (int64_t(1) << 24) && num_layers < (1 << 16) && head_dim <= 1024,
            "config.json: the model's sizes are out of range (vocab_size ", vocab_size, ", hidden_size ", hidden_size,
            ", intermediate_size ", intermediate_size, ", num_hidden_layers ", num_layers, ", head_dim ", head_dim,
            ")");
}

}  // namespace fastdllm
