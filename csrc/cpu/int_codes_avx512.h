// Integer codes (cpu/int_weights.h) decoded into bf16 pairs in AVX-512
// registers: one 128-bit (int4) or two 128-bit (int8) loads give a panel's 16
// columns x one input pair, the B operand of vdpbf16ps and one 64-byte row of
// an AMX B tile. Include only from AVX-512 translation units; everything here
// has internal linkage (no weak AVX-512 copy can reach a baseline caller).
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace fastdllm::cpu {
namespace {

template <int Bits>
struct Codes;

// int4: 0x4300 | q is the bf16 of 128 + q (exact), so a group's zero point
// becomes z + 128 (kOffset). Three ALU ops per 32 codes: the 16 bytes are
// broadcast to the four 128-bit lanes, a shuffle puts byte l in both words of
// dword l, a per-word shift brings the high nibble down in the odd words, and
// one ternary-logic op keeps the nibbles and sets the exponent bits.
template <>
struct Codes<4> {
  static constexpr int64_t kPairBytes = 16;
  static constexpr float kOffset = 128.f;
  static __m512i decode(const uint8_t* p) {
    const __m512i b = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    // lane L, dword d: bytes (4L + d, zero, 4L + d, zero); -1 (0x80..) selects zero
    const __m512i idx = _mm512_set_epi8(
        -1, 15, -1, 15, -1, 14, -1, 14, -1, 13, -1, 13, -1, 12, -1, 12,
        -1, 11, -1, 11, -1, 10, -1, 10, -1, 9, -1, 9, -1, 8, -1, 8,
        -1, 7, -1, 7, -1, 6, -1, 6, -1, 5, -1, 5, -1, 4, -1, 4,
        -1, 3, -1, 3, -1, 2, -1, 2, -1, 1, -1, 1, -1, 0, -1, 0);
    const __m512i w = _mm512_srlv_epi16(_mm512_shuffle_epi8(b, idx), _mm512_set1_epi32(0x00040000));
    // (w & 0x000F000F) | 0x43004300: ternary-logic truth table A & B | C = 0xEA
    return _mm512_ternarylogic_epi32(w, _mm512_set1_epi32(0x000F000F), _mm512_set1_epi32(0x43004300), 0xEA);
  }
};

// int8: through fp32 (integers up to 256 are exact in bf16, so the top half
// of the fp32 bits is the bf16).
template <>
struct Codes<8> {
  static constexpr int64_t kPairBytes = 32;
  static constexpr float kOffset = 0.f;
  static __m512i decode(const uint8_t* p) {
    const __m512 e = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    const __m512 o =
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
    return _mm512_or_si512(_mm512_srli_epi32(_mm512_castps_si512(e), 16),
                           _mm512_and_si512(_mm512_castps_si512(o), _mm512_set1_epi32(int(0xFFFF0000u))));
  }
};

}  // namespace
}  // namespace fastdllm::cpu
