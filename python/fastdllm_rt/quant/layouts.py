"""The on-disk layouts of GPTQ and AWQ checkpoints, to and from canonical codes.

GPTQ (AutoGPTQ ``QuantLinear.pack``; vLLM ``gptq``): ``qweight`` int32
[K * bits / 32, N], packed along K with the lowest bits holding the lowest k;
``qzeros`` int32 [G, N * bits / 32] packed the same way along N, each stored
zero minus one in the v1 format (``checkpoint_format`` "gptq"); ``scales``
[G, N]; ``g_idx`` int32 [K], the group of each input (act-order makes it a
permutation of contiguous groups).

AWQ GEMM (AutoAWQ ``WQLinear_GEMM``; vLLM ``awq_triton``): ``qweight`` int32
[K, N / 8] packed along N, nibble i of a word holding column 8c + ORDER[i]
with ORDER = 0 2 4 6 1 3 5 7; ``qzeros`` int32 [G, N / 8] the same; ``scales``
[G, N]; zero points stored as they are.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from .codes import Codes
from .spec import QuantSpec

AWQ_ORDER = np.array([0, 2, 4, 6, 1, 3, 5, 7])


def _unpack_rows(words: np.ndarray, bits: int) -> np.ndarray:
    """int32 [R, C] packed along R (low bits first) -> uint8 [R * 32 / bits, C]."""
    per = 32 // bits
    u = words.view(np.uint32)
    shifts = (np.arange(per, dtype=np.uint32) * bits)[None, :, None]
    vals = (u[:, None, :] >> shifts) & np.uint32((1 << bits) - 1)
    return vals.reshape(u.shape[0] * per, u.shape[1]).astype(np.uint8)


def _pack_rows(vals: np.ndarray, bits: int) -> np.ndarray:
    """uint [R, C] -> int32 [R * bits / 32, C] packed along R, low bits first."""
    per = 32 // bits
    v = vals.astype(np.uint32).reshape(vals.shape[0] // per, per, vals.shape[1])
    shifts = (np.arange(per, dtype=np.uint32) * bits)[None, :, None]
    return np.bitwise_or.reduce(v << shifts, axis=1).view(np.int32)


def tensor_shapes(spec: QuantSpec, n: int, k: int) -> Dict[str, Tuple[Tuple[int, ...], Tuple[str, ...]]]:
    """suffix -> (shape, allowed safetensors dtypes) of one [N, K] layer matrix
    (shape None: checked by the reader, several are legal)."""
    g = k // spec.group_size if spec.group_size else 1
    floats = ("F16", "BF16", "F32")
    if spec.method == "fp8":
        if spec.block:
            bn, bk = spec.block
            return {"weight": ((n, k), ("F8_E4M3",)),
                    "weight_scale_inv": ((-(-n // bn), -(-k // bk)), floats)}
        return {"weight": ((n, k), ("F8_E4M3",)), "weight_scale": (None, floats)}
    if spec.method == "gptq":
        return {"qweight": ((k * spec.bits // 32, n), ("I32",)), "qzeros": ((g, n * spec.bits // 32), ("I32",)),
                "scales": ((g, n), floats), "g_idx": ((k,), ("I32",))}
    return {"qweight": ((k, n // 8), ("I32",)), "qzeros": ((g, n // 8), ("I32",)), "scales": ((g, n), floats)}


def layout_problem(spec: QuantSpec, n: int, k: int) -> Optional[str]:
    """Why an [N, K] matrix cannot be stored in this layout, or None."""
    if spec.group_size and k % spec.group_size:
        return f"group_size {spec.group_size} does not divide in_features {k}"
    per = 32 // spec.bits
    if spec.method == "gptq" and (k % per or n % per):
        return f"GPTQ {spec.bits}-bit packing needs in_features and out_features divisible by {per} (got [{n}, {k}])"
    if spec.method == "awq" and n % 8:
        return f"AWQ packing needs out_features divisible by 8 (got {n})"
    return None


def act_order_perm(g_idx: np.ndarray, group: int, k: int, name: str) -> Optional[np.ndarray]:
    """The input order of act-order codes from GPTQ's g_idx (None for the natural
    order): inputs sorted by group, which must then be contiguous groups of
    ``group``. Raises ValueError naming the tensor otherwise."""
    g_idx = np.asarray(g_idx, dtype=np.int64)
    natural = np.arange(k) // group
    if np.array_equal(g_idx, natural):
        return None
    perm = np.argsort(g_idx, kind="stable")
    if not np.array_equal(g_idx[perm], natural):
        raise ValueError(f"tensor '{name}.g_idx': each group must hold exactly {group} inputs "
                         f"(group ids must lie in [0, {k // group}))")
    return perm.astype(np.int32)


def gptq_to_codes(t: Dict[str, np.ndarray], spec: QuantSpec, n: int, k: int, name: str) -> Codes:
    """Canonical codes of a GPTQ matrix (t: qweight, qzeros, scales as float32, g_idx or None)."""
    group = spec.group_size or k
    q = _unpack_rows(t["qweight"], spec.bits).T  # [N, K]
    z = _unpack_rows(t["qzeros"].T.copy(), spec.bits).T.astype(np.float32) + spec.zero_offset  # [G, N]
    perm = None
    if t.get("g_idx") is not None:
        perm = act_order_perm(t["g_idx"], group, k, name)
    if perm is not None:
        q = q[:, perm]
    return Codes(codes=np.ascontiguousarray(q), scales=np.ascontiguousarray(t["scales"].T, dtype=np.float32),
                 zeros=np.ascontiguousarray(z.T), perm=perm)


def awq_to_codes(t: Dict[str, np.ndarray], spec: QuantSpec, n: int, k: int, name: str) -> Codes:
    def unpack(words):  # [R, N/8] -> [R, N]
        u = words.view(np.uint32)
        nib = (u[:, :, None] >> (np.arange(8, dtype=np.uint32) * 4)) & np.uint32(0xF)
        out = np.empty_like(nib)
        out[:, :, AWQ_ORDER] = nib
        return out.reshape(u.shape[0], -1).astype(np.uint8)

    return Codes(codes=np.ascontiguousarray(unpack(t["qweight"]).T),
                 scales=np.ascontiguousarray(t["scales"].T, dtype=np.float32),
                 zeros=np.ascontiguousarray(unpack(t["qzeros"]).T.astype(np.float32)))


def _e4m3_table() -> np.ndarray:
    """float32 value of each E4M3FN byte (bias 7, no infinities, S.1111.111 is NaN)."""
    b = np.arange(256)
    sign = np.where(b >> 7, -1.0, 1.0)
    e, m = (b >> 3) & 0xF, b & 7
    val = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7.0))
    val = np.where((e == 15) & (m == 7), np.nan, val)
    return (sign * val).astype(np.float32)


E4M3 = _e4m3_table()


def fp8_to_float(weight: np.ndarray, scale: np.ndarray, spec: QuantSpec, name: str) -> np.ndarray:
    """W = e4m3(weight) * scale: per tensor (a scalar), per output channel
    ([N] or [N, 1]), or per block (weight_scale_inv [ceil(N/bn), ceil(K/bk)])."""
    n, k = weight.shape
    w = E4M3[weight.view(np.uint8)]
    s = np.asarray(scale, np.float32)
    if spec.block:
        bn, bk = spec.block
        full = np.repeat(np.repeat(s, bn, axis=0), bk, axis=1)[:n, :k]
        return w * full
    if s.size == 1:
        return w * s.reshape(())
    if s.shape in ((n,), (n, 1)):
        return w * s.reshape(n, 1)
    raise ValueError(f"tensor '{name}.weight_scale' has shape {list(s.shape)}; expected a scalar, [{n}] or [{n}, 1]")


# The non-negative finite E4M3 values in increasing order, with their bytes
# (0x00 .. 0x7E; 0x7F is NaN), for round-to-nearest-even encoding.
_E4M3_POS = E4M3[:0x7F].astype(np.float64)
E4M3_MAX = float(_E4M3_POS[-1])  # 448


def float_to_e4m3(x: np.ndarray) -> np.ndarray:
    """The E4M3FN bytes of x (round to nearest, ties to even, saturating at
    +-448 as torch's float8_e4m3fn conversion with clamping does; NaN refused)."""
    x = np.asarray(x, np.float64)
    if np.isnan(x).any():
        raise ValueError("float_to_e4m3: NaN has no finite E4M3 code")
    a = np.minimum(np.abs(x), E4M3_MAX)
    hi = np.clip(np.searchsorted(_E4M3_POS, a, side="left"), 0, len(_E4M3_POS) - 1)
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = a - _E4M3_POS[lo], _E4M3_POS[hi] - a
    # the nearer neighbour; on a tie the even code (its last mantissa bit 0)
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    return np.where(np.signbit(x), code | 0x80, code).astype(np.uint8)  # -0.0 as torch keeps it


def fp8_rows(weight: np.ndarray, scale: np.ndarray, spec: Optional[QuantSpec], name: str):
    """(E4M3 bytes [N, K], fp32 scales [N]) with one scale per output row, what
    the W8A8 GEMM takes: a per-tensor or per-channel checkpoint as stored
    (exact); a block-scaled one, or float weights (scale None: our RTN at load),
    re-quantized per row from its float values (max |row| / 448)."""
    if scale is not None and spec is not None and not spec.block:
        n = weight.shape[0]
        s = np.asarray(scale, np.float32)
        if s.size == 1:
            return weight.view(np.uint8), np.full(n, float(s.reshape(())), np.float32)
        if s.shape in ((n,), (n, 1)):
            return weight.view(np.uint8), s.reshape(n).copy()
    w = fp8_to_float(weight, scale, spec, name) if scale is not None else np.asarray(weight, np.float32)
    amax = np.abs(w).max(axis=1)
    s = np.where(amax > 0, amax / E4M3_MAX, 1.0).astype(np.float32)
    return float_to_e4m3(w / s[:, None]), s


def to_codes(t: Dict[str, np.ndarray], spec: QuantSpec, n: int, k: int, name: str) -> Codes:
    return (gptq_to_codes if spec.method == "gptq" else awq_to_codes)(t, spec, n, k, name)


def codes_to_tensors(c: Codes, spec: QuantSpec) -> Dict[str, np.ndarray]:
    """The on-disk tensors (suffix -> array; scales float16) of canonical codes."""
    n, k = c.codes.shape
    group = spec.group_size or k
    if spec.method == "gptq":
        q = c.codes
        g_idx = np.arange(k, dtype=np.int32) // group
        if c.perm is not None:  # back to the natural input order; g_idx says each input's group
            q = np.empty_like(c.codes)
            q[:, c.perm] = c.codes
            g_idx = np.empty(k, np.int32)
            g_idx[c.perm] = np.arange(k, dtype=np.int32) // group
        z = c.zeros.astype(np.int64) - spec.zero_offset
        if z.min() < 0:
            raise ValueError("a zero point of 0 cannot be stored in the GPTQ v1 layout (it stores zero - 1)")
        return {"qweight": _pack_rows(q.T, spec.bits), "qzeros": _pack_rows(z.astype(np.uint32), spec.bits).T.copy(),
                "scales": c.scales.T.astype(np.float16), "g_idx": g_idx}
    if c.perm is not None:
        raise ValueError("the AWQ layout has no input permutation")

    def pack(vals):  # [R, N] -> [R, N/8]
        v = vals.astype(np.uint32).reshape(vals.shape[0], -1, 8)[:, :, AWQ_ORDER]
        return np.bitwise_or.reduce(v << (np.arange(8, dtype=np.uint32) * 4), axis=2).view(np.int32)

    return {"qweight": pack(c.codes.T), "qzeros": pack(c.zeros.T.astype(np.uint32)),
            "scales": c.scales.T.astype(np.float16)}
