// The attention kernels compiled for the x86-64-v3 baseline, and the run-time
// choice between them and the AVX-512 build.
#define ATTENTION_ISA avx2
#include "core/cpu_features.h"
#include "cpu/attention_impl.h"

namespace fastdllm::cpu {

namespace avx512 {
void attention_impl(const float* q, int64_t len_q, int64_t heads, const PagedKV& kv, int64_t n_kv, float scale,
                    const int32_t* kv_limit, const uint8_t* mask, float* out);
}

void attention(const float* q, int64_t len_q, int64_t heads, const PagedKV& kv, int64_t n_kv, float scale,
               const int32_t* kv_limit, const uint8_t* mask, float* out) {
  if (isa() == Isa::AVX512_BF16)
    avx512::attention_impl(q, len_q, heads, kv, n_kv, scale, kv_limit, mask, out);
  else
    avx2::attention_impl(q, len_q, heads, kv, n_kv, scale, kv_limit, mask, out);
}

}  // namespace fastdllm::cpu
