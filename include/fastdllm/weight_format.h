// Weight formats: how a weight matrix W [N, K] (out_features x in_features) is
// stored, described once for every backend (the trait table below), and the
// view of one stored matrix that the GEMM ops take.
//
// Integer formats hold codes q in [0, 2^bits) with a scale s and a zero point z
// per (output row, group of group_size consecutive inputs):
//     W[n, perm[j]] = s[n, j / group_size] * (q[n, j] - z[n, j / group_size])
// perm is the input order of the codes (GPTQ's act-order; identity when absent).
// This is the canonical form every loader produces (GPTQ, AWQ, our quantizer);
// each backend repacks it at load into its own code layout.
//
// Fp8 holds OCP E4M3 bytes (no infinities; 0x7F / 0xFF are NaN) with one fp32
// scale per output row: W[n, k] = s[n] * e4m3(q[n, k]). Its GEMM quantizes the
// activations too, per token (W8A8, dynamic scales): CUDA (sm_90a) only.
#pragma once
#include <cstdint>

#include "fastdllm/tensor.h"

namespace fastdllm {

enum class WeightFormat : uint8_t { Dense, Int8, Int4, Fp8 };

struct WeightFormatTraits {
  WeightFormat format;
  const char* name;  // as users and config files spell it
  int bits;          // per code; 0 for dense (the float dtype decides)
  int codes_per_byte;
};

// One row per format, in enum order (static_asserts below keep it so).
inline constexpr WeightFormatTraits kWeightFormats[] = {
    {WeightFormat::Dense, "dense", 0, 0},
    {WeightFormat::Int8, "int8", 8, 1},
    {WeightFormat::Int4, "int4", 4, 2},
    {WeightFormat::Fp8, "fp8", 8, 1},
};
static_assert(kWeightFormats[int(WeightFormat::Dense)].format == WeightFormat::Dense, "table order");
static_assert(kWeightFormats[int(WeightFormat::Int8)].format == WeightFormat::Int8, "table order");
static_assert(kWeightFormats[int(WeightFormat::Int4)].format == WeightFormat::Int4, "table order");
static_assert(kWeightFormats[int(WeightFormat::Fp8)].format == WeightFormat::Fp8, "table order");
static_assert(sizeof(kWeightFormats) / sizeof(kWeightFormats[0]) == 4, "one row per format");
static_assert(kWeightFormats[int(WeightFormat::Int8)].bits * kWeightFormats[int(WeightFormat::Int8)].codes_per_byte == 8,
              "int8 codes fill a byte");
static_assert(kWeightFormats[int(WeightFormat::Int4)].bits * kWeightFormats[int(WeightFormat::Int4)].codes_per_byte == 8,
              "two int4 codes per byte");

inline constexpr const WeightFormatTraits& format_traits(WeightFormat f) { return kWeightFormats[int(f)]; }
inline bool is_integer_format(WeightFormat f) { return f == WeightFormat::Int8 || f == WeightFormat::Int4; }
inline bool is_quantized_format(WeightFormat f) { return f != WeightFormat::Dense; }
// "dense", "int8", "int4", "fp8"; throws InvalidArgument naming the string otherwise.
WeightFormat weight_format_from_name(const char* name);

// A stored weight matrix as the GEMM ops take it. Dense: `values` is the float
// matrix [N, K] (bf16 panels when values.packed). Integer: `values` is U8 with
// the logical shape [N, K] and the backend's code layout; `scales` and
// `zero_scales` (s * z, so that a group's zero costs one multiply-add) are F32
// in the backend's layout; `perm` (I32 [K]) is the input order of the codes or
// undefined. Fp8: `values` holds the E4M3 bytes [N, K] and `scales` [N].
// gate_up marks the CPU's gate/up-interleaved rows (fused SiLU*mul).
struct WeightView {
  TensorView values;
  WeightFormat format = WeightFormat::Dense;
  int64_t group_size = 0;
  TensorView scales, zero_scales, perm;
  // Backend-specific parameters besides (ops::IntWeightLayout::aux_bytes): on
  // CUDA, bf16 scales then bf16 zero terms (-s*z) for the tensor-core GEMMs.
  TensorView aux;

  WeightView() = default;
  WeightView(const TensorView& dense) : values(dense) {}  // NOLINT: a dense matrix is a weight
  int64_t rows() const { return values.shape[0]; }
  int64_t cols() const { return values.shape[1]; }
  int64_t groups() const { return group_size > 0 ? values.shape[1] / group_size : 0; }
};

}  // namespace fastdllm
