"""The fp8 (W8A8) format's host side, checked on the CPU: the E4M3 encoder
against torch's float8_e4m3fn (round to nearest even, saturation, signed zero),
per-row codes from per-tensor / per-channel checkpoints (as stored) and from
block-scaled or float weights (re-quantized), and clear errors where fp8 cannot
run (the CPU). The GEMM itself (CUDA, sm_90a) is checked in tests/test_cuda.py."""
import numpy as np
import pytest
import torch

import fastdllm_rt
from fastdllm_rt import _C
from fastdllm_rt.errors import LoadError
from fastdllm_rt.quant.layouts import E4M3, E4M3_MAX, float_to_e4m3, fp8_rows
from fastdllm_rt.quant.spec import QuantSpec
from model_factory import make_config, write_model

ops = _C._testing.ops


def torch_e4m3(x):
    return torch.from_numpy(np.clip(x, -448, 448)).to(torch.float8_e4m3fn).view(torch.uint8).numpy()


def test_encoder_matches_torch_including_ties_and_saturation():
    rng = np.random.default_rng(0)
    pos = E4M3[:0x7F].astype(np.float64)
    mids = (pos[:-1] + pos[1:]) / 2  # exact ties: to the even code
    x = np.concatenate([rng.standard_normal(50000) * 40, rng.standard_normal(2000) * 1e-3, mids, -mids,
                        [0.0, -0.0, 448.0, -448.0, 449.0, 480.0, 1e9, -1e9]])
    np.testing.assert_array_equal(float_to_e4m3(x), torch_e4m3(x))
    assert E4M3_MAX == 448.0
    with pytest.raises(ValueError, match="NaN"):
        float_to_e4m3(np.array([1.0, np.nan]))


def test_rows_from_checkpoint_scales():
    rng = np.random.default_rng(1)
    w = torch_e4m3(rng.standard_normal((6, 32)) * 10)
    q, s = fp8_rows(w, np.float32(0.5), QuantSpec(method="fp8", bits=8, group_size=0), "t")  # per tensor: as stored
    np.testing.assert_array_equal(q, w)
    np.testing.assert_array_equal(s, np.full(6, 0.5, np.float32))
    ch = (rng.random((6, 1)) + 0.1).astype(np.float32)
    q, s = fp8_rows(w, ch, QuantSpec(method="fp8", bits=8, group_size=0), "t")  # per channel: as stored
    np.testing.assert_array_equal(q, w)
    np.testing.assert_array_equal(s, ch[:, 0])
    # block scales: re-quantized per row from the dequantized values
    blk = (rng.random((2, 2)) + 0.1).astype(np.float32)
    spec = QuantSpec(method="fp8", bits=8, group_size=0, block=(3, 16))
    deq = E4M3[w] * np.repeat(np.repeat(blk, 3, 0), 16, 1)
    q, s = fp8_rows(w, blk, spec, "t")
    got = E4M3[q] * s[:, None]
    np.testing.assert_allclose(got, deq, rtol=2 ** -3, atol=1e-6)  # E4M3 keeps 3 mantissa bits
    np.testing.assert_allclose(np.abs(got).max(1), np.abs(deq).max(1), rtol=1e-6)  # the row maximum is exact


def test_float_weights_quantize_per_row():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 48)).astype(np.float32)
    w[3] = 0  # an all-zero row keeps scale 1
    q, s = fp8_rows(w, None, None, "t")
    assert s[3] == 1 and not q[3].any()
    np.testing.assert_allclose(E4M3[q] * s[:, None], w, rtol=2 ** -4, atol=np.abs(w).max() * 2 ** -9)


def test_fp8_refused_on_the_cpu(tmp_path):
    path = write_model(str(tmp_path / "m"), make_config())
    with pytest.raises(LoadError, match="quantize='fp8' runs on CUDA"):
        fastdllm_rt.Engine(path, device="cpu", quantize="fp8")
    cfg = {k: v for k, v in make_config().items() if k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "tie_word_embeddings")}
    with pytest.raises(ValueError, match="fp8 layers \\(W8A8\\) run on CUDA only"):
        _C.Model(cfg, "float32", "cpu", "fp8", 0)
    x = np.ones((2, 16), np.float32)
    with pytest.raises(ValueError, match="fp8 weights, W8A8.*not implemented for device cpu|linear \\(fp8"):
        ops.linear_fp8(x, np.zeros((4, 16), np.uint8), np.ones(4, np.float32))
