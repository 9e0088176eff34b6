# The CUDA backend (sm_90a): the cuda layer, a static library of .cu files
# that ops links, with cudart linked statically so that the module imports on a
# machine with no GPU or driver. CUTLASS/CuTe headers come from -DCUTLASS_DIR or
# from the nvidia-cutlass Python package (a build requirement in pyproject.toml).

set(FASTDLLM_HAVE_CUDA OFF)
if(NOT FASTDLLM_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(FASTDLLM_HAVE_CUDA ON)
  elseif(FASTDLLM_CUDA STREQUAL "ON")
    message(FATAL_ERROR "FASTDLLM_CUDA=ON but no CUDA compiler was found: install the CUDA toolkit "
                        "(nvcc on PATH or CUDACXX=/path/to/nvcc), or build with FASTDLLM_CUDA=OFF")
  else()
    message(STATUS "fastdllm_rt: no CUDA compiler found, building the CPU backend only")
  endif()
endif()

if(FASTDLLM_HAVE_CUDA)
  if(NOT CUTLASS_DIR)
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -c
              "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source'))"
      OUTPUT_VARIABLE _cutlass_src OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
    if(_rc EQUAL 0 AND EXISTS "${_cutlass_src}/include/cutlass/cutlass.h")
      set(CUTLASS_DIR "${_cutlass_src}")
    endif()
  endif()
  if(NOT CUTLASS_DIR OR NOT EXISTS "${CUTLASS_DIR}/include/cutlass/cutlass.h")
    message(FATAL_ERROR
      "The CUDA backend needs the CUTLASS 3.x headers and none were found. Either "
      "`pip install nvidia-cutlass` (it is a build requirement of pyproject.toml, so a plain "
      "`pip install .` brings it), or pass -DCUTLASS_DIR=/path/to/cutlass (a checkout with include/), "
      "or build the CPU backend only with FASTDLLM_CUDA=OFF.")
  endif()
  message(STATUS "fastdllm_rt: CUDA backend ON, CUTLASS from ${CUTLASS_DIR}")

  # CMake < 3.29 does not know the arch-specific "90a" target, so the flags are explicit.
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  enable_language(CUDA)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)

  add_library(fastdllm_cuda STATIC
    csrc/cuda/gemm/gemm_bf16_sm90_large.cu
    csrc/cuda/gemm/gemm_bf16_sm90_small_m.cu
    csrc/cuda/gemm/gemm_f16_sm90_large.cu
    csrc/cuda/gemm/gemm_f16_sm90_small_m.cu
    csrc/cuda/gemm/linear.cu
    csrc/cuda/gemm/linear_int.cu
    csrc/cuda/gemm/linear_fp8.cu
    csrc/cuda/gemm/gemm_fp8_sm90_small_m.cu
    csrc/cuda/gemm/gemm_w4a16_sm90.cu
    csrc/cuda/gemm/gemm_w8a16_sm90.cu
    csrc/cuda/elementwise/elementwise.cu
    csrc/cuda/attention/kv_append.cu
    csrc/cuda/attention/block_diffusion_attention.cu
    csrc/cuda/vocab/lm_head_top2.cu
    csrc/cuda/vocab/sampling_candidates.cu
  )
  target_include_directories(fastdllm_cuda PRIVATE include csrc
    "${CUTLASS_DIR}/include" "${CUTLASS_DIR}/tools/util/include")
  target_compile_options(fastdllm_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -O3>)
  # One nvcc at a time by default: a CUTLASS sm90 TU takes several GB of RAM to
  # compile (the CI box has 2 cores and 24 GiB). FASTDLLM_NVCC_JOBS raises it on
  # bigger machines (bench/gpu_session.sh uses 6).
  set(_nvcc_jobs 1)
  if(DEFINED ENV{FASTDLLM_NVCC_JOBS})
    set(_nvcc_jobs "$ENV{FASTDLLM_NVCC_JOBS}")
  endif()
  set_property(GLOBAL APPEND PROPERTY JOB_POOLS nvcc_pool=${_nvcc_jobs})
  set_property(TARGET fastdllm_cuda PROPERTY JOB_POOL_COMPILE nvcc_pool)

  # The cuda layer: kernels over core only; ops links it beside the CPU backend.
  target_link_libraries(fastdllm_cuda PUBLIC fastdllm_core)
  target_link_libraries(fastdllm_ops PUBLIC fastdllm_cuda)
  target_compile_definitions(fastdllm_core PUBLIC FASTDLLM_WITH_CUDA=1)
  target_link_libraries(fastdllm_core PUBLIC CUDA::cudart_static)
endif()
