// The CUDA layout of integer weight codes (fastdllm/weight_format.h), packed
// on the host at load and uploaded: row-major per output row, int4 two codes
// per byte (even input in the low nibble), int8 one per byte; scales and
// zero_scales (s * z) fp32 [N][groups]; for the tensor-core GEMMs
// (gemm_mixed_sm90.cuh) also bf16 scales [N][groups] followed by bf16 zero terms
// -s*z [N][groups] (the aux bytes). Plain C++ (no CUDA): the op layer packs
// with it. Limits (the SIMT kernel's): K and group_size multiples of 8.
#pragma once
#include <cstdint>

#include "fastdllm/dtype.h"

namespace fastdllm::cuda {

inline int64_t int_code_bytes(int bits, int64_t n, int64_t k) { return n * k * bits / 8; }
inline int64_t int_param_floats(int64_t n, int64_t groups) { return n * groups; }
inline int64_t int_aux_bytes(int, int64_t n, int64_t groups) { return 2 * n * groups * 2; }

// aux: null, or the matrix's int_aux_bytes (n_total rows).
inline void pack_int_rows_host(const uint8_t* q, const float* scales, const float* zeros, int64_t rows,
                               int64_t row0, int bits, int64_t k, int64_t groups, uint8_t* codes,
                               float* dst_scales, float* dst_zero_scales, uint16_t* aux = nullptr,
                               int64_t n_total = 0) {
  const int64_t row_bytes = k * bits / 8;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* s = q + r * k;
    uint8_t* d = codes + (row0 + r) * row_bytes;
    if (bits == 4)
      for (int64_t j = 0; j < k / 2; ++j) d[j] = uint8_t((s[2 * j] & 0xF) | (s[2 * j + 1] & 0xF) << 4);
    else
      for (int64_t j = 0; j < k; ++j) d[j] = s[j];
    for (int64_t g = 0; g < groups; ++g) {
      const float sc = scales[r * groups + g];
      dst_scales[(row0 + r) * groups + g] = sc;
      dst_zero_scales[(row0 + r) * groups + g] = sc * zeros[r * groups + g];
      if (aux) {
        aux[(row0 + r) * groups + g] = f32_to_bf16(sc);
        aux[n_total * groups + (row0 + r) * groups + g] = f32_to_bf16(-sc * zeros[r * groups + g]);
      }
    }
  }
}

}  // namespace fastdllm::cuda
