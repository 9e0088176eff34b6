// The packed layout of bf16 weight matrices, made once at load time.
//
// A weight W [N, K] (out_features x in_features) is stored as panels of 16 rows.
// Inside a panel, k runs in pairs: for pair kp the panel holds 16 32-bit words,
// word l = (W[n0 + l][2kp] in the low half, W[n0 + l][2kp + 1] in the high half).
// One 512-bit load therefore gives 16 output columns x 2 k's: exactly the operand
// of AVX-512 BF16 vdpbf16ps; the AVX2 path splits the halves into two fp32
// vectors with a shift and a mask. N is padded to a multiple of 16 and K to a
// multiple of 2 with zeros.
#pragma once
#include <cstdint>

namespace fastdllm::cpu {

constexpr int64_t kPanelRows = 16;

inline int64_t packed_pairs(int64_t k) { return (k + 1) / 2; }
inline int64_t packed_elems(int64_t n, int64_t k) {
  return (n + kPanelRows - 1) / kPanelRows * kPanelRows * packed_pairs(k) * 2;
}
// Element index of W[r][c] in the packed array.
inline int64_t packed_index(int64_t r, int64_t c, int64_t k) {
  return ((r / kPanelRows) * packed_pairs(k) + c / 2) * kPanelRows * 2 + (r % kPanelRows) * 2 + (c % 2);
}

// Packs rows [row0, row0 + rows) of a row-major bf16 matrix with k columns into
// dst (which holds the whole packed matrix; padding must be zeroed by the caller).
void pack_bf16_rows(const uint16_t* src, int64_t rows, int64_t row0, int64_t k, uint16_t* dst);

// The fused gate/up matrix [2I, K] for linear_silu_mul: gate and up panels
// alternate (panel 2j = gate rows [16j, 16j+16), panel 2j+1 = the same up rows),
// so one register tile holds matching gate and up columns and its epilogue can
// write silu(gate) * up. Row r of the logical [gate; up] matrix goes to packed
// row gate_up_row(r, inter). Needs inter % kPanelRows == 0.
inline int64_t gate_up_row(int64_t r, int64_t inter) {
  const bool up = r >= inter;
  const int64_t q = up ? r - inter : r;
  return (q / kPanelRows) * 2 * kPanelRows + (up ? kPanelRows : 0) + q % kPanelRows;
}
// Packs rows [row0, row0 + rows) of the logical [gate; up] matrix in that order
// (row0 and rows multiples of kPanelRows).
void pack_gate_up_rows(const uint16_t* src, int64_t rows, int64_t row0, int64_t inter, int64_t k, uint16_t* dst);

}  // namespace fastdllm::cpu
