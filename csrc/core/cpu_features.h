// The CPU instruction sets detected at run time. Kernels are compiled per ISA
// and picked here, never by the build machine's flags. FASTDLLM_ISA=avx2 (or
// avx512) in the environment caps the choice, so both paths can be tested on
// one machine.
#pragma once

namespace fastdllm::cpu {

enum class Isa { AVX2, AVX512_BF16 };

struct Features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512bf16 = false;
};

const Features& features();
Isa isa();              // the best ISA the kernels support on this CPU, after FASTDLLM_ISA
const char* isa_name(Isa isa);

}  // namespace fastdllm::cpu
