#!/usr/bin/env bash
# Installs a built wheel the way users do and runs it: a fresh virtual
# environment, and a PATH without any compiler, CMake or nvcc (only the venv
# and a few shell tools), so nothing can be built behind our back.
#   CPU wheel:  fastdllm-rt --version, the demo (writes a tiny model and streams
#               from it), an Engine stream from Python, fastdllm-rt info.
#   --cuda:     the CUDA wheel on a machine without a GPU: it imports, says
#               there is no device, the CPU path still runs, device="cuda" fails clearly.
#
#   bash packaging/test_wheel.sh dist/fastdllm_rt-*+cpu-*.whl
#   bash packaging/test_wheel.sh dist/fastdllm_rt-*+cu130-*.whl --cuda
set -euo pipefail
wheel=$(realpath "$1")
cuda=${2:-}
cd "$(dirname "$0")/.."
work=$PWD/build/wheel-test
rm -rf "$work" && mkdir -p "$work/bin"
python3 -m venv "$work/venv"
# The only tools on PATH: the venv and these (no cc, c++, gcc, cmake, ninja, nvcc).
for tool in sh bash env cat ls rm mkdir mktemp head tail grep sed tr wc dirname basename uname stat date realpath; do
  p=$(command -v "$tool" || true)
  [ -n "$p" ] && ln -s "$p" "$work/bin/$tool"
done
export PATH="$work/venv/bin:$work/bin"
unset CC CXX CUDACXX CMAKE_PREFIX_PATH
for t in cc c++ gcc g++ cmake ninja nvcc; do
  if command -v "$t" >/dev/null 2>&1; then echo "test_wheel: $t is on PATH" >&2; exit 1; fi
done
t0=$(date +%s)
python -m pip install --quiet --disable-pip-version-check "$wheel"
echo "== installed $(basename "$wheel") ($(( $(stat -c %s "$wheel") / 1024 )) KiB) in $(( $(date +%s) - t0 )) s"
cd "$work"  # not the checkout: the installed package must be the one imported
fastdllm-rt --version
python - "$cuda" <<'PY'
import sys, tempfile
import fastdllm_rt
from fastdllm_rt.demo import write_demo_model
assert "site-packages" in fastdllm_rt.__file__, fastdllm_rt.__file__
print("version", fastdllm_rt.__version__, "isa", fastdllm_rt.cpu_isa(), "cuda", fastdllm_rt.cuda_status())
status = fastdllm_rt.cuda_status()
if sys.argv[1] == "--cuda":
    assert status["built"], "the CUDA wheel has no CUDA backend"
    assert "+cu" in fastdllm_rt.__version__
    if not status["available"]:
        print("no CUDA device here:", status["message"])
        try:
            fastdllm_rt.Engine(write_demo_model(tempfile.mkdtemp()), device="cuda")
            raise SystemExit("device='cuda' without a GPU did not fail")
        except ValueError as e:
            print("device='cuda' fails clearly:", e)
else:
    assert not status["built"] and "+cpu" in fastdllm_rt.__version__
d = write_demo_model(tempfile.mkdtemp())
with fastdllm_rt.Engine(d) as e:
    text = "".join(e.stream("Hello from a wheel", max_new_tokens=24))
    assert len(e.last_result.token_ids) == 24, e.last_result
print("stream ok:", repr(text[:40]))
PY
fastdllm-rt demo "Hi" --max-new-tokens 16 > /dev/null
d=$(mktemp -d)
python -c "from fastdllm_rt.demo import write_demo_model; write_demo_model('$d')"
fastdllm-rt info "$d" | head -3
echo "== wheel test passed"
