// Copying a tensor between float dtypes (checkpoint -> model storage),
// exactly through fp32, rounding to nearest even, and noticing non-finite
// values on the way (a corrupt checkpoint must not become finite garbage).
#pragma once
#include <cstdint>

#include "fastdllm/dtype.h"

namespace fastdllm {

// Copies n elements from src (src_dtype) to dst (dst_dtype); returns how many
// of them are not finite (NaN or +-inf), counted in the same pass.
int64_t convert_elements(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);
// How many of n float elements are not finite (one read pass).
int64_t count_non_finite(const void* data, DType dtype, int64_t n);

}  // namespace fastdllm
