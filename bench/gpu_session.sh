#!/usr/bin/env bash
# Everything a lent GPU machine is for, in as few device calls as possible
# (see /work/.library/device: 30 minutes of device time per session, 10 per call).
#
#   bash bench/gpu_session.sh build   # pip install . with the CUDA backend (~5 min on 16 cores)
#   bash bench/gpu_session.sh test    # the CUDA-marked tests            -> $OUT/gpu_tests.log
#   bash bench/gpu_session.sh bench   # gpu_forward + gpu_generate + gpu_batch JSON -> $OUT/
#   bash bench/gpu_session.sh sanitize  # compute-sanitizer memcheck over the small-shape tests
#   bash bench/gpu_session.sh all     # the three in order (fits one call only with a warm ccache)
#
# The device image has Python 3.12, torch, pybind11 and scikit-build-core but not
# nvidia-cutlass (the CUTLASS headers) and nothing can be fetched there, so carry
# the wheel: on the dev machine, once,
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps nvidia-cutlass==4.2.0.0 -d .whl
# and name .whl in the call's carry. The built package lands in /tmp/site; a later
# call on the same warm machine reuses it, a fresh machine needs `build` again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu_session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}

build() {
  local t0=$SECONDS
  if ls .whl/nvidia_cutlass-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/nvidia_cutlass-*.whl
  fi
  local cutlass
  cutlass=$(python3 -c "import os, cutlass_library; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source'))")
  FASTDLLM_CUDA=ON FASTDLLM_NVCC_JOBS=${FASTDLLM_NVCC_JOBS:-6} CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-12} \
    python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site --upgrade \
      -C build-dir=/tmp/fastdllm_build -C cmake.define.CUTLASS_DIR="$cutlass" . 2>&1 | tee "$OUT/gpu_build.log"
  python3 -c "import fastdllm_rt as f; print(f.cuda_status())" | tee -a "$OUT/gpu_build.log"
  echo "build took $((SECONDS - t0)) s" | tee -a "$OUT/gpu_build.log"
}

tests() {
  { nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || echo "no nvidia-smi"; } | tee "$OUT/gpu_tests.log"
  # Every test runs (a first run should show all that fails, not the first);
  # --timeout: a hung kernel ends its test, not the call. -p no:cacheprovider: the
  # tree may be read-only. || true: the log is the result.
  local timeout_flag
  timeout_flag=$(python3 -c "import pytest_timeout" 2>/dev/null && echo --timeout=300 || true)
  python3 -m pytest -q -m cuda -p no:cacheprovider $timeout_flag -rf --durations=15 tests 2>&1 |
    tee -a "$OUT/gpu_tests.log" || true
}

sanitize() {
  # Out-of-bounds and misaligned accesses of every kernel on odd shapes (slow: small cases only).
  compute-sanitizer --tool memcheck --print-limit 20 python3 -m pytest -q -m cuda -p no:cacheprovider -x \
    tests/test_cuda.py -k "37 or gather or ragged or (engine_token_exact_vs_cpu and bs0) or sampling_engine or come_down or batched_engine" 2>&1 |
    tee "$OUT/gpu_memcheck.log" || true
}

bench() {
  python3 bench/gpu_forward.py --out "$OUT/gpu_forward.json" 2>&1 | tee "$OUT/gpu_forward.log" || true
  python3 bench/gpu_generate.py --out "$OUT/gpu_generate.json" 2>&1 | tee "$OUT/gpu_generate.log" || true
  python3 bench/gpu_batch.py --out "$OUT/gpu_batch.json" 2>&1 | tee "$OUT/gpu_batch.log" || true
}

case "${1:-all}" in
  build) build ;;
  test) tests ;;
  bench) bench ;;
  sanitize) sanitize ;;
  all) build && tests && bench ;;
  *) echo "usage: $0 build|test|bench|sanitize|all" >&2; exit 2 ;;
esac
