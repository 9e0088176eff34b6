// Element types and devices the runtime knows, and bf16/fp16 <-> fp32 helpers
// usable from host code of any backend.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace fastdllm {

enum class DType : uint8_t { F32, F16, BF16, I32, U8 };
enum class Device : uint8_t { CPU, CUDA };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
// Accepts "float32"/"f32"/"F32", "float16"/"fp16"/"F16", "bfloat16"/"bf16"/"BF16", "int32", "uint8".
// Throws InvalidArgument naming the string otherwise.
DType dtype_from_name(const char* name);
const char* device_name(Device d);
inline bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace fastdllm
