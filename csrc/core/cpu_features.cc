#include "core/cpu_features.h"

#include <sys/syscall.h>
#include <unistd.h>

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
    // The tile registers' state is off until the process asks for it
    // (ARCH_REQ_XCOMP_PERM 0x1023, XFEATURE_XTILEDATA 18); a kernel without it refuses.
    const bool amx_cpu = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16");
    r.amx_bf16 = amx_cpu && r.avx512bf16 && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    return r;
  }();
  return f;
}

Isa isa() {
  const Features& f = features();
  const bool has512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx512bf16;
  const Isa best = has512 && f.amx_bf16 ? Isa::AMX_BF16 : has512 ? Isa::AVX512_BF16 : Isa::AVX2;
  const char* cap = std::getenv("FASTDLLM_ISA");
  // Re-read on every call (cheap): tests switch the cap between runs.
  if (cap && std::strcmp(cap, "avx2") == 0) return Isa::AVX2;
  if (cap && (std::strcmp(cap, "avx512") == 0 || std::strcmp(cap, "avx512_bf16") == 0))
    return best < Isa::AVX512_BF16 ? best : Isa::AVX512_BF16;
  return best;
}

const char* isa_name(Isa i) {
  switch (i) {
    case Isa::AMX_BF16: return "amx_bf16";
    case Isa::AVX512_BF16: return "avx512_bf16";
    default: return "avx2";
  }
}

}  // namespace fastdllm::cpu
