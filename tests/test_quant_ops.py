"""Integer-weight GEMMs (int8, int4; fastdllm/weight_format.h) against
dequantize-then-matmul in float64, for each CPU kernel ISA, on odd shapes:
M in 1, 3, 8, 17, 32, 64; N not a multiple of the 16-row panel; K and group
sizes that are not multiples of the kernel's unroll; with and without an
act-order input permutation, bias, residual and the fused SiLU*mul epilogue."""
import numpy as np
import pytest
import torch

from fastdllm_rt._C import _testing as T

ops = T.ops
RNG = np.random.default_rng(77)
ROWS = [1, 3, 8, 17, 32, 64]


def codes(n, k, bits, group, rng=RNG):
    """Canonical codes, scales and zero points: W[n, j] = s * (q - z) per group."""
    g = k // group
    q = rng.integers(0, 1 << bits, (n, k)).astype(np.uint8)
    s = (rng.random((n, g)) * 0.02 + 0.001).astype(np.float32)
    z = rng.integers(0, 1 << bits, (n, g)).astype(np.float32)
    return q, s, z


def dequant(q, s, z, group, perm=None):
    """W [n, k] in the original input order (float64)."""
    w = (q.astype(np.float64) - np.repeat(z, group, axis=1)) * np.repeat(s, group, axis=1)
    if perm is None:
        return w
    out = np.empty_like(w)
    out[:, perm] = w  # code column j is input perm[j]
    return out


def operand(x, isa):
    """What the kernel multiplies: bf16-rounded activations on AVX-512 (vdpbf16ps), fp32 on AVX2."""
    if isa == "avx2":
        return x.astype(np.float64)
    return torch.from_numpy(x).bfloat16().double().numpy()


@pytest.mark.parametrize("fmt,bits", [("int8", 8), ("int4", 4)])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n,k,group", [(23, 64, 64), (40, 96, 32), (331, 256, 128), (80, 70, 70), (17, 384, 128)])
def test_linear_int_matches_dequantized(isa, fmt, bits, rows, n, k, group):
    q, s, z = codes(n, k, bits, group)
    x = RNG.standard_normal((rows, k)).astype(np.float32)
    b = RNG.standard_normal(n).astype(np.float32)
    r = RNG.standard_normal((rows, n)).astype(np.float32)
    w = dequant(q, s, z, group)
    ref = operand(x, isa) @ w.T
    out = ops.linear_int(x, q, s, z, format=fmt, group_size=group)
    # fp32 accumulation of exact products, the zero point applied once per group
    tol = 3e-6 * np.sqrt(k) * np.abs(w).max() * np.abs(x).max() * 4
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=tol)
    out = ops.linear_int(x, q, s, z, format=fmt, group_size=group, bias=b, residual=r)
    np.testing.assert_allclose(out, ref + b + r, rtol=1e-5, atol=tol)


@pytest.mark.parametrize("fmt,bits", [("int8", 8), ("int4", 4)])
@pytest.mark.parametrize("rows", [1, 17])
def test_linear_int_act_order_permutation(isa, fmt, bits, rows):
    n, k, group = 48, 256, 64
    q, s, z = codes(n, k, bits, group)
    perm = RNG.permutation(k).astype(np.int32)
    x = RNG.standard_normal((rows, k)).astype(np.float32)
    ref = operand(x, isa) @ dequant(q, s, z, group, perm).T
    out = ops.linear_int(x, q, s, z, perm=perm, format=fmt, group_size=group)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fmt,bits", [("int8", 8), ("int4", 4)])
@pytest.mark.parametrize("rows", ROWS)
def test_linear_int_fused_silu_mul(isa, fmt, bits, rows):
    inter, k, group = 48, 96, 32
    q, s, z = codes(2 * inter, k, bits, group)
    x = RNG.standard_normal((rows, k)).astype(np.float32)
    gu = operand(x, isa) @ dequant(q, s, z, group).T
    g, u = gu[:, :inter], gu[:, inter:]
    ref = g / (1 + np.exp(-g)) * u
    out = ops.linear_int(x, q, s, z, format=fmt, group_size=group, silu=True)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_linear_int_bf16_activations(isa):
    n, k, group = 33, 128, 128
    q, s, z = codes(n, k, 4, group)
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(3)).bfloat16()
    xb = x.view(torch.int16).numpy().view(np.uint16)
    ref = x.double().numpy() @ dequant(q, s, z, group).T
    out = ops.linear_int(xb, q, s, z, format="int4", group_size=group, x_dtype="bfloat16")
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bad,msg", [
    (dict(group_size=30), "group size 30 must be even and divide in_features 64"),
    (dict(group_size=7), "group size 7 must be even"),
    (dict(format="int3"), "unknown weight format 'int3'"),
    (dict(format="dense"), "dense is not an integer format"),
])
def test_linear_int_bad_arguments_name_the_problem(bad, msg):
    q, s, z = codes(16, 64, 4, 32)
    args = dict(format="int4", group_size=32)
    args.update(bad)
    if "group_size" in bad:
        s = np.ones((16, 2), np.float32)
        z = np.zeros((16, 2), np.float32)
    with pytest.raises(ValueError, match=msg):
        ops.linear_int(np.zeros((1, 64), np.float32), q, s, z, **args)
