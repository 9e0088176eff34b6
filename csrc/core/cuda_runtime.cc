#include "core/cuda_runtime.h"

#include "fastdllm/error.h"

#ifdef FASTDLLM_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace fastdllm::cuda {

#ifdef FASTDLLM_WITH_CUDA

Status status() {
  Status s;
  s.built = true;
  cudaRuntimeGetVersion(&s.runtime_version);
  if (cudaDriverGetVersion(&s.driver_version) != cudaSuccess) s.driver_version = 0;
  const cudaError_t err = cudaGetDeviceCount(&s.device_count);
  if (err != cudaSuccess) {
    s.device_count = 0;
    s.message = std::string("no CUDA device: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return s;
  }
  for (int i = 0; i < s.device_count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) == cudaSuccess)
      s.devices.push_back(detail::concat(p.name, " (sm_", p.major, p.minor, ")"));
  }
  if (s.device_count == 0) s.message = "no CUDA device: cudaGetDeviceCount returned 0";
  return s;
}

void* device_malloc(size_t nbytes) {
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, nbytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw BudgetExceeded(detail::concat("cudaMalloc of ", nbytes, " bytes failed: ",
                                        cudaGetErrorString(err)));
  }
  return p;
}

void device_release(void* p) { cudaFree(p); }

static void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(detail::concat(what, " failed: ", cudaGetErrorString(err)));
  }
}

void* stream_handle() {
  static cudaStream_t s = [] {
    cudaStream_t st = nullptr;
    check(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    return st;
  }();
  return s;
}

void synchronize() { check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_handle())), "cudaStreamSynchronize"); }

void copy(void* dst, const void* src, size_t nbytes) {
  const auto s = static_cast<cudaStream_t>(stream_handle());
  check(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, s), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize after a copy");
}

void* graph_capture(const std::function<void()>& body) {
  const auto s = static_cast<cudaStream_t>(stream_handle());
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
  cudaGraph_t graph = nullptr;
  try {
    body();
  } catch (...) {
    cudaStreamEndCapture(s, &graph);  // leave the stream usable
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  check(cudaStreamEndCapture(s, &graph), "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check(err, "cudaGraphInstantiate");
  return exec;
}

void graph_launch(void* exec) {
  check(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), static_cast<cudaStream_t>(stream_handle())),
        "cudaGraphLaunch");
}

void graph_destroy(void* exec) { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec)); }

void upload_async(void* dst, const void* src, size_t nbytes) {
  check(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream_handle())),
        "cudaMemcpyAsync");
}

void download_async(void* dst, const void* src, size_t nbytes) {
  check(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream_handle())),
        "cudaMemcpyAsync");
}

void copy_rows(void* dst, size_t dst_pitch, const void* src, size_t src_pitch, size_t width, size_t rows) {
  if (width == 0 || rows == 0) return synchronize();
  const auto s = static_cast<cudaStream_t>(stream_handle());
  check(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, cudaMemcpyDefault, s), "cudaMemcpy2DAsync");
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize after a copy");
}


#else

Status status() {
  Status s;
  s.message = "fastdllm_rt was built without the CUDA backend (FASTDLLM_CUDA=OFF or no nvcc at build time)";
  return s;
}

void* device_malloc(size_t) {
  throw InvalidArgument("device 'cuda' requested, but fastdllm_rt was built without the CUDA backend");
}

void device_release(void*) {}

void copy(void*, const void*, size_t) { throw InvalidArgument("built without the CUDA backend"); }
void upload_async(void*, const void*, size_t) { throw InvalidArgument("built without the CUDA backend"); }
void download_async(void*, const void*, size_t) { throw InvalidArgument("built without the CUDA backend"); }
void copy_rows(void*, size_t, const void*, size_t, size_t, size_t) {
  throw InvalidArgument("built without the CUDA backend");
}

void* stream_handle() { return nullptr; }
void synchronize() {}
void* graph_capture(const std::function<void()>&) { throw InvalidArgument("built without the CUDA backend"); }
void graph_launch(void*) {}
void graph_destroy(void*) {}

#endif

// Over device_malloc / device_release of either build (without CUDA they throw).
CachingAllocator& device_allocator() {
  // Never destroyed: at process exit the CUDA context may already be gone.
  static CachingAllocator* a = new CachingAllocator(device_malloc, device_release);
  return *a;
}

bool available() {
  const Status s = status();
  return s.built && s.device_count > 0;
}

}  // namespace fastdllm::cuda
