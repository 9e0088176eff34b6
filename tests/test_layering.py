"""The include direction is one way (DESIGN.md, Layers):
python -> bindings -> runtime -> model, kv -> ops -> cpu | cuda -> core.
A file may include its own layer and the layers below it, never one above or
beside it (cpu and cuda never include each other, nor model and kv), and
nothing below the bindings knows pybind11 or Python. CMake builds one library
per layer (CMakeLists.txt); this test keeps the sources honest."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# include/fastdllm headers by layer; csrc/<layer>/ by folder
PUBLIC = {"dtype.h": "core", "error.h": "core", "tensor.h": "core", "paged_kv.h": "core", "ops.h": "ops",
          "kv_cache.h": "kv", "prefix_cache.h": "kv", "model.h": "model", "weight_format.h": "core"}
BELOW = {
    "core": set(),
    "cpu": {"core"},
    "cuda": {"core"},
    "ops": {"cpu", "cuda", "core"},
    "kv": {"core"},
    "model": {"ops", "cpu", "cuda", "core"},
    "runtime": {"model", "kv", "ops", "cpu", "cuda", "core"},
    "bindings": {"runtime", "model", "kv", "ops", "cpu", "cuda", "core"},
}
# model may reach the kernels only through ops: a skip downwards is still one way,
# but these two arrows were removed on purpose and must not come back.
FORBIDDEN = {("model", "cpu"), ("model", "cuda"), ("runtime", "cpu"), ("runtime", "cuda")}


def layer_of(path):
    rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
    if rel.startswith("include/fastdllm/"):
        return PUBLIC[os.path.basename(rel)]
    if rel.startswith("csrc/"):
        return rel.split("/")[1]
    raise AssertionError(f"{rel} is in no layer")


def sources():
    for top in ("include", "csrc"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith((".h", ".cc", ".cu", ".cuh")):
                    yield os.path.join(d, f)


def included(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r'\s*#\s*include\s+([<"])([^>"]+)[>"]', line)
            if m:
                yield m.group(1), m.group(2)


def test_every_public_header_has_a_layer():
    assert sorted(os.listdir(os.path.join(ROOT, "include", "fastdllm"))) == sorted(PUBLIC)


def test_includes_go_one_way():
    bad = []
    for path in sources():
        me = layer_of(path)
        for kind, inc in included(path):
            if inc.startswith(("pybind11", "Python.h")) and me != "bindings":
                bad.append(f"{path}: {inc} (Python below the bindings)")
            if kind != '"':
                continue
            if inc.startswith("fastdllm/"):
                target = layer_of(os.path.join(ROOT, "include", inc))
            elif inc.split("/")[0] in BELOW:
                target = inc.split("/")[0]
            else:
                continue  # CUTLASS / CuTe
            if target != me and (target not in BELOW[me] or (me, target) in FORBIDDEN):
                bad.append(f"{os.path.relpath(path, ROOT)} ({me}) includes {inc} ({target})")
    assert not bad, "\n".join(bad)


def test_cmake_builds_one_library_per_layer():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        cmake = f.read()
    for lib in ("fastdllm_core", "fastdllm_cpu", "fastdllm_ops", "fastdllm_kv", "fastdllm_model", "fastdllm_runtime"):
        assert f"add_library({lib} STATIC" in cmake
    # each layer links only the ones below it
    links = dict(re.findall(r"target_link_libraries\((fastdllm_\w+) PUBLIC ([^)]*)\)", cmake))
    assert set(links["fastdllm_model"].split()) == {"fastdllm_ops", "fastdllm_core"}
    assert set(links["fastdllm_runtime"].split()) == {"fastdllm_model", "fastdllm_kv"}
    assert set(links["fastdllm_kv"].split()) == {"fastdllm_core"}
