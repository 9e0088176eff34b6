#include "core/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace fastdllm::cpu {

const Features& features() {
  static const Features f = [] {
    Features r;
    __builtin_cpu_init();
    r.avx2 = __builtin_cpu_supports("avx2");
    r.fma = __builtin_cpu_supports("fma");
    r.f16c = true;  // implied by x86-64-v3, the build's baseline
    r.avx512f = __builtin_cpu_supports("avx512f");
    r.avx512bw = __builtin_cpu_supports("avx512bw");
    r.avx512vl = __builtin_cpu_supports("avx512vl");
    r.avx512bf16 = __builtin_cpu_supports("avx512bf16");
    return r;
  }();
  return f;
}

Isa isa() {
  const Features& f = features();
  const bool has512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx512bf16;
  const char* cap = std::getenv("FASTDLLM_ISA");
  // Re-read on every call (cheap): tests switch the cap between runs.
  if (cap && std::strcmp(cap, "avx2") == 0) return Isa::AVX2;
  return has512 ? Isa::AVX512_BF16 : Isa::AVX2;
}

const char* isa_name(Isa i) { return i == Isa::AVX2 ? "avx2" : "avx512_bf16"; }

}  // namespace fastdllm::cpu
