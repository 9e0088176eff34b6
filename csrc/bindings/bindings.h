// The pieces of the _C module, one file each: the runtime API the Python
// package uses (runtime_bindings.cc) and the test-only helpers of
// _C._testing (testing_bindings.cc).
#pragma once
#include <pybind11/pybind11.h>

#include "runtime/scheduler.h"

namespace fastdllm::bindings {

void bind_runtime(pybind11::module_& m);
void bind_testing(pybind11::module_& m);
pybind11::dict stats_dict(const SchedulerStats& s);
DType kv_dtype_from_name(const std::string& name);
SchedulerConfig scheduler_config(int page_size, int64_t max_pages, const std::string& kv_dtype, bool prefix_cache,
                                 int max_batch_size, int64_t max_batch_tokens);

}  // namespace fastdllm::bindings
