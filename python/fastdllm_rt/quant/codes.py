"""Canonical integer codes of one matrix, and round-to-nearest quantization."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Codes:
    """W[n, perm[j]] = scales[n, j // g] * (codes[n, j] - zeros[n, j // g])."""

    codes: np.ndarray            # uint8 [N, K]
    scales: np.ndarray           # float32 [N, G]
    zeros: np.ndarray            # float32 [N, G]
    perm: Optional[np.ndarray] = None  # int32 [K]

    @property
    def group_size(self) -> int:
        return self.codes.shape[1] // self.scales.shape[1]


def dequantize(c: Codes) -> np.ndarray:
    """The float32 matrix [N, K] in the original input order."""
    g = c.group_size
    n, k = c.codes.shape
    w = (c.codes.reshape(n, -1, g).astype(np.float32) - c.zeros[:, :, None]) * c.scales[:, :, None]
    w = w.reshape(n, k)
    if c.perm is None:
        return w
    out = np.empty_like(w)
    out[:, c.perm] = w
    return out


def quant_params(wmin: np.ndarray, wmax: np.ndarray, bits: int, sym: bool, min_zero: int = 0):
    """Scales and zero points for groups with these extremes, GPTQ's quantizer
    convention: the range always includes 0; symmetric puts the zero at
    2^(bits-1) with scale 2 max|w| / (2^bits - 1). min_zero: lowest zero point
    allowed (1 for files in the GPTQ v1 layout, which stores zero - 1)."""
    maxq = (1 << bits) - 1
    wmin = np.minimum(wmin, 0).astype(np.float32)
    wmax = np.maximum(wmax, 0).astype(np.float32)
    if sym:
        amax = np.maximum(-wmin, wmax)
        scale = 2 * amax / maxq
        scale[scale == 0] = 1.0
        zero = np.full_like(scale, (maxq + 1) // 2)
    else:
        scale = (wmax - wmin) / maxq
        scale[scale == 0] = 1.0
        zero = np.clip(np.round(-wmin / scale), min_zero, maxq)
    return scale.astype(np.float32), zero.astype(np.float32)


def encode(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int) -> np.ndarray:
    """Codes of w [N, G, g] under per-group scale / zero [N, G]."""
    q = np.round(w / scale[:, :, None]) + zero[:, :, None]
    return np.clip(q, 0, (1 << bits) - 1).astype(np.uint8)


def rtn_quantize(w: np.ndarray, bits: int, group_size: int = 0, sym: Optional[bool] = None,
                 min_zero: int = 1) -> Codes:
    """Round-to-nearest codes of a float matrix w [N, K]. group_size 0: one group
    per row. sym defaults to True for 8 bits (per-channel symmetric, W8A16) and
    False for 4 bits (scale and zero point per group, W4A16)."""
    if sym is None:
        sym = bits == 8
    n, k = w.shape
    g = group_size or k
    if k % g:
        raise ValueError(f"group_size {group_size} does not divide the matrix's {k} input features")
    wg = np.asarray(w, dtype=np.float32).reshape(n, k // g, g)
    scale, zero = quant_params(wg.min(axis=2), wg.max(axis=2), bits, sym, min_zero)
    return Codes(codes=encode(wg, scale, zero, bits).reshape(n, k), scales=scale, zeros=zero)
