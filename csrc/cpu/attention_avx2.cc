// The attention kernels compiled for the x86-64-v3 baseline, and the run-time
// choice between them and the AVX-512 build.
#define ATTENTION_ISA avx2
#include "core/cpu_features.h"
#include "cpu/attention_impl.h"

namespace fastdllm::cpu {

namespace avx512 {
void attention_impl(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale, float* out);
}
void attention_amx(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale, float* out);

void attention(const float* q, int64_t heads, const PagedKV& kv, const KVBatch& b, float scale, void* out,
               DType out_dtype) {
  const int64_t n = b.num_tokens * heads * kv.head_dim;
  // A bf16 out (a GEMM operand) is computed in fp32 scratch, then rounded.
  float* o = out_dtype == DType::BF16 ? scratch_floats(n, 2) : static_cast<float*>(out);
  // AMX tiles for bf16 pages (the engine's for bf16 / fp16 models): bf16 products
  // as PyTorch's bf16 attention; fp32 pages keep the exact fp32 kernel.
  const Isa i = isa();
  const bool amx = i == Isa::AMX_BF16 && kv.dtype == DType::BF16 && kv.page_size == 16 && kv.head_dim % 32 == 0 &&
                   kv.head_dim <= 128;
  if (amx)
    attention_amx(q, heads, kv, b, scale, o);
  else if (i >= Isa::AVX512_BF16)
    avx512::attention_impl(q, heads, kv, b, scale, o);
  else
    avx2::attention_impl(q, heads, kv, b, scale, o);
  if (o != out) store_bf16(o, n, static_cast<uint16_t*>(out));
}

}  // namespace fastdllm::cpu
