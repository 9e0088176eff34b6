#include "fastdllm/dtype.h"

#include <cmath>
#include <string>

#include "fastdllm/error.h"
#include "fastdllm/weight_format.h"

namespace fastdllm {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::U8: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
    case DType::U8: return "uint8";
  }
  return "?";
}

DType dtype_from_name(const char* name) {
  const std::string s(name);
  if (s == "float32" || s == "f32" || s == "F32") return DType::F32;
  if (s == "float16" || s == "fp16" || s == "f16" || s == "F16") return DType::F16;
  if (s == "bfloat16" || s == "bf16" || s == "BF16") return DType::BF16;
  if (s == "int32" || s == "I32") return DType::I32;
  if (s == "uint8" || s == "U8" || s == "bool" || s == "BOOL") return DType::U8;
  throw InvalidArgument("unknown dtype '" + s + "'");
}

WeightFormat weight_format_from_name(const char* name) {
  const std::string s(name);
  for (const WeightFormatTraits& t : kWeightFormats)
    if (s == t.name) return t.format;
  throw InvalidArgument("unknown weight format '" + s + "' (expected dense, int8, int4 or fp8)");
}

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

// IEEE half conversions in software: used off the hot path only (kernels use F16C).
float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t man = h & 0x3ff;
  float f;
  if (exp == 0) {
    f = std::ldexp(float(man), -24);
  } else if (exp == 31) {
    f = man ? NAN : INFINITY;
  } else {
    f = std::ldexp(float(man | 0x400), exp - 25);
  }
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u |= sign;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;
  if (a < 6.103515625e-05f) {  // subnormal: round to a multiple of 2^-24
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  uint32_t mant = uint32_t(std::nearbyint((m * 2.0f - 1.0f) * 1024.0f));
  int exp = e - 1 + 15;
  if (mant == 1024) { mant = 0; ++exp; }
  if (exp >= 31) return sign | 0x7c00;
  return sign | uint16_t(exp << 10) | uint16_t(mant);
}

}  // namespace fastdllm
