// The CPU layout of integer weight codes (fastdllm/weight_format.h), made once
// at load from the canonical [N, K] codes.
//
// Codes: panels of 16 output rows (as the bf16 panels, cpu/packed_weights.h);
// inside a panel, inputs run in pairs (2kp, 2kp + 1), one pair after another:
//   int4: 16 bytes per pair, byte l = q[row l][2kp] | q[row l][2kp + 1] << 4
//   int8: 32 bytes per pair, bytes [0, 16) = q[row l][2kp], [16, 32) = q[row l][2kp + 1]
// so that one 128-bit load gives a panel's codes for one pair (two for int8),
// which the AVX-512 kernel turns into the 16 bf16 pairs of vdpbf16ps and the
// AVX2 kernel into two fp32 vectors per 8 rows.
// Scales and zero_scales (s * z): F32 [panels][groups][16], a panel's group in
// one 64-byte line. Rows past N are zero (codes, scales): they produce zeros.
// Limits: K and group_size even, K % group_size == 0.
#pragma once
#include <cstdint>

#include "cpu/packed_weights.h"

namespace fastdllm::cpu {

inline int64_t int_pair_bytes(int bits) { return bits == 4 ? 16 : 32; }
inline int64_t int_panels(int64_t n) { return (n + kPanelRows - 1) / kPanelRows; }
inline int64_t int_code_bytes(int bits, int64_t n, int64_t k) { return int_panels(n) * (k / 2) * int_pair_bytes(bits); }
inline int64_t int_param_floats(int64_t n, int64_t groups) { return int_panels(n) * groups * kPanelRows; }

// Packs rows [0, rows) of canonical codes q [rows, k] (one code per byte) and
// their scales / zero points [rows, groups] into the packed matrix at packed
// rows dst_row(r) (row0 + r, or the gate/up-interleaved row).
struct IntPackTarget {
  uint8_t* codes;
  float* scales;
  float* zero_scales;
  int bits;
  int64_t k, groups;
};
void pack_int_rows(const uint8_t* q, const float* scales, const float* zeros, int64_t rows, int64_t row0,
                   int64_t inter /* 0: plain rows; else gate/up-interleaved with this intermediate size */,
                   const IntPackTarget& dst);

}  // namespace fastdllm::cpu
