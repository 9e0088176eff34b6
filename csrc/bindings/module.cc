// pybind11 module fastdllm_rt._C: the runtime API (runtime_bindings.cc), the
// test helpers in _C._testing (testing_bindings.cc), and the few process-wide
// calls below.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <omp.h>

#include "bindings/bindings.h"
#include "core/cpu_features.h"
#include "core/cuda_runtime.h"
#include "core/profiler.h"
#include "fastdllm/error.h"

namespace py = pybind11;
using namespace fastdllm;

namespace {

py::dict cuda_status_dict() {
  const cuda::Status s = cuda::status();
  py::dict d;
  d["built"] = s.built;
  d["available"] = s.built && s.device_count > 0;
  d["runtime_version"] = s.runtime_version;
  d["driver_version"] = s.driver_version;
  d["device_count"] = s.device_count;
  d["devices"] = s.devices;
  d["message"] = s.message;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdllm_rt native runtime";
  py::register_exception<BudgetExceeded>(m, "MemoryBudgetError", PyExc_MemoryError);

  m.def("cuda_status", &cuda_status_dict, "Whether the CUDA backend was built and which devices it sees.");
  m.def("cpu_isa", [] { return std::string(cpu::isa_name(cpu::isa())); },
        "The CPU kernel ISA chosen at run time (honours FASTDLLM_ISA=avx2).");
  // The calling thread's OpenMP threads (an engine sets its own loop thread's).
  m.def("set_num_threads", [](int n) {
    FDL_CHECK(n > 0, "threads must be > 0, got ", n);
    omp_set_num_threads(n);
  });
  m.def("get_num_threads", [] { return omp_get_max_threads(); });
  m.def("profile_start", [] {
    profiler::take();
    profiler::set_enabled(true);
  }, "Start timing each op of model forwards (for benchmarks).");
  m.def("profile_stop", [] {
    profiler::set_enabled(false);
    py::dict d;
    for (const auto& kv : profiler::take())
      d[py::str(kv.first)] = py::make_tuple(kv.second.calls, kv.second.seconds);
    return d;
  }, "Stop timing; returns {op: (calls, seconds)}.");

  bindings::bind_runtime(m);
  py::module_ t = m.def_submodule("_testing", "Helpers for the tests and benchmarks (not the runtime API)");
  bindings::bind_testing(t);
}
