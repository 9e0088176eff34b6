// TensorView: a non-owning view (pointer, dtype, shape, device) of a dense
// row-major tensor. Every op front-end takes views; ownership lives in Buffer
// (an aligned allocation) or in whoever handed the pointer over.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "fastdllm/dtype.h"

namespace fastdllm {

constexpr int kMaxDims = 4;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  // A bf16 weight matrix [N, K] held in the backend's packed panel layout
  // (csrc/cpu/packed_weights.h) rather than row-major. shape stays logical.
  bool packed = false;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};

  TensorView() = default;
  TensorView(void* d, DType t, std::initializer_list<int64_t> dims, Device dev = Device::CPU);

  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  int64_t numel() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  bool defined() const { return data != nullptr; }
  template <typename T> T* ptr() const { return static_cast<T*>(data); }
  // "bfloat16[7, 64] on cpu": used in every error message about a tensor.
  std::string describe() const;
  // Rows [r0, r0+n) of the leading dimension.
  TensorView rows(int64_t r0, int64_t n) const;
  TensorView reshaped(std::initializer_list<int64_t> dims) const;
};

// Owned, 64-byte aligned storage on one device, reused across forwards.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t nbytes, Device dev = Device::CPU);
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  Device device() const { return device_; }
  // Grows (never shrinks) so that at least nbytes are available; contents are lost on growth.
  void reserve(size_t nbytes);
  TensorView view(DType t, std::initializer_list<int64_t> dims) const;

 private:
  void release();
  void* data_ = nullptr;
  size_t size_ = 0;
  Device device_ = Device::CPU;
};

}  // namespace fastdllm
