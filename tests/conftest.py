import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fastdllm_rt  # noqa: E402
from fastdllm_rt.demo import write_demo_model  # noqa: E402

_BEST = fastdllm_rt.cpu_isa()
# Every kernel path this machine has: AVX2 always, AVX-512 BF16 and AMX BF16 where present.
ISAS = ["avx2"] + (["avx512"] if _BEST != "avx2" else []) + (["amx"] if _BEST == "amx_bf16" else [])


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The demo model (fastdllm_rt.demo: a tiny model with a tokenizer that writes letters)."""
    return write_demo_model(str(tmp_path_factory.mktemp("demo")))


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Runs a test once per CPU kernel ISA this machine supports (FASTDLLM_ISA caps the choice)."""
    monkeypatch.setenv("FASTDLLM_ISA", request.param)
    assert fastdllm_rt.cpu_isa().startswith(request.param)
    return request.param


def pytest_collection_modifyitems(config, items):
    if fastdllm_rt.cuda_status()["available"]:
        return
    skip = pytest.mark.skip(reason="no CUDA device: " + (fastdllm_rt.cuda_status()["message"] or "not built"))
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
