"""AWQ (Lin et al. 2023): activation-aware per-input-channel scales. Inputs
with large activations matter more, so their weight columns are scaled up by
s before quantization (and the input divided by s, folded into the operation
that produces it: the RMSNorm weight for q/k/v and gate/up, up_proj's rows for
down_proj). The scale is s = mean|x|^alpha per input channel, with alpha chosen
on a grid to minimise the output error of the quantized matrices on the
calibration inputs. Written from the paper's description."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from .codes import Codes, dequantize, rtn_quantize


def search_scale(x: np.ndarray, ws: Sequence[np.ndarray], bits: int, group_size: int, grid: int = 20,
                 max_rows: int = 512) -> np.ndarray:
    """The input scale s [K] (all ones when nothing beats plain RTN) for the
    matrices ws [N_i, K] that share the inputs x [n, K]."""
    x = np.asarray(x, np.float32)
    if x.shape[0] > max_rows:  # an evenly spread subset keeps the search cheap
        x = x[np.linspace(0, x.shape[0] - 1, max_rows).astype(np.int64)]
    mag = np.abs(x).mean(axis=0) + 1e-8
    ref = [x @ w.T for w in ws]
    best, best_s = None, np.ones(x.shape[1], np.float32)
    for i in range(grid):
        alpha = i / grid
        s = (mag ** alpha).astype(np.float32)
        s = s / np.sqrt(s.max() * s.min())  # centred around 1
        err = 0.0
        for w, r in zip(ws, ref):
            q = dequantize(rtn_quantize(w * s[None, :], bits, group_size))
            err += float(np.mean((x @ (q / s[None, :]).T - r) ** 2))
        if best is None or err < best:
            best, best_s = err, s
    return best_s


def awq_quantize_group(ws: List[np.ndarray], s: np.ndarray, bits: int, group_size: int) -> List[Codes]:
    """Codes of the scaled matrices w * s (the input is divided by s upstream)."""
    return [rtn_quantize(w * s[None, :], bits, group_size) for w in ws]
