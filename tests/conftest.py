import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import fastdllm_rt  # noqa: E402

ISAS = ["avx2"] + (["avx512"] if fastdllm_rt.cpu_isa() != "avx2" else [])


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Runs a test once per CPU kernel ISA this machine supports."""
    if request.param == "avx2":
        monkeypatch.setenv("FASTDLLM_ISA", "avx2")
    else:
        monkeypatch.delenv("FASTDLLM_ISA", raising=False)
    assert fastdllm_rt.cpu_isa().startswith(request.param)
    return request.param


def pytest_collection_modifyitems(config, items):
    if fastdllm_rt.cuda_status()["available"]:
        return
    skip = pytest.mark.skip(reason="no CUDA device: " + (fastdllm_rt.cuda_status()["message"] or "not built"))
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
