// Conversions between numpy arrays and TensorView for the bindings, and a
// helper that runs one op on a device for the tests (inputs uploaded, outputs
// copied back). Binding code only.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <utility>
#include <vector>

#include "core/device_memory.h"
#include "fastdllm/error.h"
#include "fastdllm/tensor.h"

namespace fastdllm::bindings {

namespace py = pybind11;
using I32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

// A C-contiguous numpy array as a CPU TensorView. dtype overrides the array's
// own type for 16-bit floats, which numpy carries as uint16 ("bfloat16"/"float16").
TensorView as_view(const py::array& a, const std::string& dtype = "");
TensorView opt_view(const py::object& o, const std::string& dtype = "");
inline py::array_t<float> empty_f32(std::vector<py::ssize_t> shape) { return py::array_t<float>(shape); }
// An op's out in out_dtype: float32, or a half type as its raw bits (uint16).
py::array operand_out(std::vector<py::ssize_t> shape, const std::string& out_dtype);
Device device_from_name(const std::string& name);

struct OnDevice {
  Device dev;
  std::vector<Buffer> bufs;
  std::vector<std::pair<TensorView, TensorView>> outs;

  explicit OnDevice(const std::string& name) : dev(device_from_name(name)) {}
  explicit OnDevice(Device d) : dev(d) {}
  TensorView in(const TensorView& host);
  TensorView out(const TensorView& host);
  // A host int32 array where the op runs (null for an empty one).
  const int32_t* ints(const std::vector<int32_t>& v);
  void finish();
};

}  // namespace fastdllm::bindings
