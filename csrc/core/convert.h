// Copying a tensor between float dtypes (checkpoint -> model storage),
// exactly through fp32, rounding to nearest even.
#pragma once
#include <cstdint>

#include "fastdllm/dtype.h"

namespace fastdllm {

// Copies n elements from src (src_dtype) to dst (dst_dtype).
void convert_elements(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);

}  // namespace fastdllm
