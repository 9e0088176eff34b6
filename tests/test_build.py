"""The module imports anywhere and reports its backends truthfully."""
import fastdllm_rt


def test_cuda_status_reports_without_crashing():
    s = fastdllm_rt.cuda_status()
    assert set(s) >= {"built", "available", "device_count", "devices", "message"}
    if not s["available"]:
        assert s["device_count"] == 0 and s["message"]
    else:
        assert s["device_count"] == len(s["devices"]) > 0


def test_cpu_isa_is_detected_at_run_time(monkeypatch):
    assert fastdllm_rt.cpu_isa() in ("avx2", "avx512_bf16", "amx_bf16")
    monkeypatch.setenv("FASTDLLM_ISA", "avx2")
    assert fastdllm_rt.cpu_isa() == "avx2"
    monkeypatch.setenv("FASTDLLM_ISA", "avx512")
    assert fastdllm_rt.cpu_isa() in ("avx2", "avx512_bf16")  # avx2 on a CPU without AVX-512 BF16
    monkeypatch.setenv("FASTDLLM_ISA", "amx")
    assert fastdllm_rt.cpu_isa() == fastdllm_rt._C.cpu_isa()
