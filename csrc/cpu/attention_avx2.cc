// The attention kernels compiled for the x86-64-v3 baseline, and the run-time
// choice between them and the AVX-512 build.
#define ATTENTION_ISA avx2
#include "core/cpu_features.h"
#include "cpu/attention_impl.h"

namespace fastdllm::cpu {

namespace avx512 {
void attention_impl(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale, float* out);
}

void attention(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale, void* out,
               DType out_dtype) {
  const int64_t n = b.num_tokens * heads * kv.head_dim;
  // A bf16 out (a GEMM operand) is computed in fp32 scratch, then rounded.
  float* o = out_dtype == DType::BF16 ? scratch_floats(n, 2) : static_cast<float*>(out);
  if (isa() == Isa::AVX512_BF16)
    avx512::attention_impl(q, heads, kv, b, scale, o);
  else
    avx2::attention_impl(q, heads, kv, b, scale, o);
  if (o != out) store_bf16(o, n, static_cast<uint16_t*>(out));
}

}  // namespace fastdllm::cpu
