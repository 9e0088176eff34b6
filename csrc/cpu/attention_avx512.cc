// The attention kernels compiled with AVX-512 flags (see attention_impl.h).
#define ATTENTION_ISA avx512
#include "cpu/attention_impl.h"
