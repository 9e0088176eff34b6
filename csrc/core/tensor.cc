#include "fastdllm/tensor.h"

#include <cstdlib>
#include <new>
#include <sstream>

#include "fastdllm/error.h"
#include "core/device_memory.h"

namespace fastdllm {

TensorView::TensorView(void* d, DType t, std::initializer_list<int64_t> dims, Device dev)
    : data(d), dtype(t), device(dev), ndim(int(dims.size())) {
  FDL_CHECK(dims.size() <= kMaxDims, "tensor rank ", dims.size(), " exceeds ", kMaxDims);
  int i = 0;
  for (int64_t v : dims) shape[i++] = v;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

std::string TensorView::describe() const {
  std::ostringstream os;
  os << dtype_name(dtype) << "[";
  for (int i = 0; i < ndim; ++i) os << (i ? ", " : "") << shape[i];
  os << "]" << (packed ? " packed" : "") << " on " << device_name(device);
  return os.str();
}

TensorView TensorView::rows(int64_t r0, int64_t n) const {
  TensorView v = *this;
  const int64_t row_elems = ndim ? numel() / shape[0] : 1;
  v.data = static_cast<char*>(data) + size_t(r0 * row_elems) * dtype_size(dtype);
  v.shape[0] = n;
  return v;
}

TensorView TensorView::reshaped(std::initializer_list<int64_t> dims) const {
  TensorView v(data, dtype, dims, device);
  FDL_CHECK(v.numel() == numel(), "cannot reshape ", describe());
  return v;
}

Buffer::Buffer(size_t nbytes, Device dev) : device_(dev) { reserve(nbytes); }
Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& o) noexcept : data_(o.data_), size_(o.size_), device_(o.device_) {
  o.data_ = nullptr;
  o.size_ = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = o.data_;
    size_ = o.size_;
    device_ = o.device_;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

void Buffer::release() {
  if (data_) device_free(device_, data_);
  data_ = nullptr;
  size_ = 0;
}

void Buffer::reserve(size_t nbytes) {
  if (nbytes <= size_) return;
  release();
  data_ = device_alloc(device_, nbytes);
  size_ = nbytes;
}

TensorView Buffer::view(DType t, std::initializer_list<int64_t> dims) const {
  TensorView v(data_, t, dims, device_);
  FDL_CHECK(v.nbytes() <= size_, "buffer of ", size_, " bytes is too small for ", v.describe());
  return v;
}

}  // namespace fastdllm
