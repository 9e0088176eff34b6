// The CPU instruction sets detected at run time. Kernels are compiled per ISA
// and picked here, never by the build machine's flags. FASTDLLM_ISA=avx2,
// avx512 (AVX-512 BF16 without AMX) or amx in the environment caps the choice,
// so every path can be tested on one machine. AMX needs the OS to grant the
// tile state (Linux: arch_prctl(ARCH_REQ_XCOMP_PERM), asked once).
#pragma once

namespace fastdllm::cpu {

// Ordered: each level implies the ones below it.
enum class Isa { AVX2, AVX512_BF16, AMX_BF16 };

struct Features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512bf16 = false;
  bool amx_bf16 = false;  // AMX-TILE + AMX-BF16 and the tile state granted by the OS
};

const Features& features();
Isa isa();              // the best ISA the kernels support on this CPU, after FASTDLLM_ISA
inline bool has_avx512_bf16() { return isa() >= Isa::AVX512_BF16; }
const char* isa_name(Isa isa);

}  // namespace fastdllm::cpu
