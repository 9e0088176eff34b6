#include "bindings/numpy_views.h"

namespace fastdllm::bindings {

TensorView as_view(const py::array& a, const std::string& dtype) {
  FDL_CHECK(a.flags() & py::array::c_style, "array must be C-contiguous");
  DType t;
  if (!dtype.empty()) {
    t = dtype_from_name(dtype.c_str());
  } else if (py::isinstance<py::array_t<float>>(a)) {
    t = DType::F32;
  } else if (py::isinstance<py::array_t<int32_t>>(a)) {
    t = DType::I32;
  } else if (py::isinstance<py::array_t<uint8_t>>(a) || py::isinstance<py::array_t<bool>>(a)) {
    t = DType::U8;
  } else if (a.dtype().kind() == 'f' && a.itemsize() == 2) {
    t = DType::F16;
  } else {
    throw InvalidArgument("unsupported array dtype " + std::string(py::str(a.dtype())));
  }
  FDL_CHECK(size_t(a.itemsize()) == dtype_size(t), "array itemsize ", a.itemsize(), " does not match dtype ",
            dtype_name(t));
  FDL_CHECK(a.ndim() <= kMaxDims, "array rank ", a.ndim(), " is too large");
  TensorView v;
  v.data = const_cast<void*>(a.data());
  v.dtype = t;
  v.ndim = int(a.ndim());
  for (int i = 0; i < v.ndim; ++i) v.shape[size_t(i)] = a.shape(i);
  return v;
}

TensorView opt_view(const py::object& o, const std::string& dtype) {
  return o.is_none() ? TensorView() : as_view(o.cast<py::array>(), dtype);
}

py::array operand_out(std::vector<py::ssize_t> shape, const std::string& out_dtype) {
  const bool half = out_dtype == "bfloat16" || out_dtype == "float16";
  FDL_CHECK(half || out_dtype == "float32", "out_dtype must be 'float32', 'bfloat16' or 'float16', got '", out_dtype,
            "'");
  return half ? py::array(py::array_t<uint16_t>(shape)) : py::array(empty_f32(shape));
}

Device device_from_name(const std::string& name) {
  FDL_CHECK(name == "cpu" || name == "cuda", "device must be 'cpu' or 'cuda', got '", name, "'");
  return name == "cuda" ? Device::CUDA : Device::CPU;
}

TensorView OnDevice::in(const TensorView& host) {
  if (dev == Device::CPU || !host.defined()) return host;
  bufs.emplace_back(std::max<size_t>(host.nbytes(), 4), dev);
  copy_bytes(bufs.back().data(), host.data, host.nbytes(), dev);
  TensorView v = host;
  v.data = bufs.back().data();
  v.device = dev;
  return v;
}

TensorView OnDevice::out(const TensorView& host) {
  TensorView v = in(host);
  outs.emplace_back(host, v);
  return v;
}

const int32_t* OnDevice::ints(const std::vector<int32_t>& v) {
  if (v.empty()) return nullptr;
  return in(TensorView(const_cast<int32_t*>(v.data()), DType::I32, {int64_t(v.size())})).ptr<int32_t>();
}

void OnDevice::finish() {
  if (dev == Device::CPU) return;
  for (auto& hv : outs) copy_bytes(hv.first.data, hv.second.data, hv.first.nbytes(), dev);
}

}  // namespace fastdllm::bindings
