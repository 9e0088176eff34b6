// Error types. The bindings map them onto Python exceptions:
// InvalidArgument -> ValueError, BudgetExceeded -> fastdllm_rt.MemoryBudgetError
// (a MemoryError), anything else derived from std::exception -> RuntimeError.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace fastdllm {

struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct BudgetExceeded : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace fastdllm

// Argument checks at API boundaries (op front-ends, model, cache). Never used
// inside kernels: kernels trust their front-end.
#define FDL_CHECK(cond, ...)                                                   \
  do {                                                                         \
    if (!(cond))                                                               \
      throw ::fastdllm::InvalidArgument(::fastdllm::detail::concat(__VA_ARGS__)); \
  } while (0)

// Checks on what a computation produced (not on what the caller passed):
// RuntimeError in Python.
#define FDL_CHECK_RT(cond, ...)                                                \
  do {                                                                         \
    if (!(cond))                                                               \
      throw std::runtime_error(::fastdllm::detail::concat(__VA_ARGS__));      \
  } while (0)
