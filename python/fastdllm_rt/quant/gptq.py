"""GPTQ (Frantar et al. 2022): quantize a matrix column by column, spreading
each column's rounding error over the columns not yet quantized through the
inverse Hessian of the layer's inputs (H = 2 X^T X / n), in blocks with lazy
updates. Written from the paper and the public reference's semantics: groups
take their scale and zero point from the matrix as it stands at the start of
the current block; act-order quantizes inputs in decreasing order of diag(H),
which makes the codes' input order a permutation (our canonical ``perm``)."""
from __future__ import annotations

import numpy as np

from .codes import Codes, quant_params


def hessian(x: np.ndarray) -> np.ndarray:
    """2 X^T X / n of the inputs x [n, K] (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return 2.0 * (x.T @ x) / max(1, x.shape[0])


def gptq_quantize(w: np.ndarray, h: np.ndarray, bits: int, group_size: int = 0, sym: bool = False,
                  damp: float = 0.01, act_order: bool = False, block: int = 128, min_zero: int = 1) -> Codes:
    """Codes of w [N, K] given the Hessian h [K, K] of its inputs."""
    n, k = w.shape
    g = group_size or k
    if k % g:
        raise ValueError(f"group_size {group_size} does not divide the matrix's {k} input features")
    W = np.array(w, dtype=np.float64)
    H = np.array(h, dtype=np.float64)
    dead = np.diag(H) == 0  # inputs never seen: no information, weight irrelevant
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = None
    if act_order:
        perm = np.argsort(-np.diag(H), kind="stable")
        W, H = W[:, perm], H[perm][:, perm]
    H[np.diag_indices(k)] += damp * np.mean(np.diag(H))
    # Upper Cholesky factor of H^-1: row i holds the update of the later columns.
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    Hinv = np.linalg.cholesky(Linv.T @ Linv).T
    codes = np.zeros((n, k), np.uint8)
    scales = np.zeros((n, k // g), np.float32)
    zeros = np.zeros((n, k // g), np.float32)
    maxq = (1 << bits) - 1
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        W1 = W[:, i1:i2].copy()
        Err = np.zeros_like(W1)
        Hi = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if col % g == 0:
                # W, not W1: the group as it stood when this block began (the reference's choice)
                grp = W[:, col:col + g]
                s, z = quant_params(grp.min(axis=1), grp.max(axis=1), bits, sym, min_zero)
                scales[:, col // g], zeros[:, col // g] = s, z
            s, z = scales[:, col // g].astype(np.float64), zeros[:, col // g].astype(np.float64)
            wc = W1[:, i]
            q = np.clip(np.round(wc / s) + z, 0, maxq)
            codes[:, col] = q.astype(np.uint8)
            err = (wc - (q - z) * s) / Hi[i, i]
            W1[:, i:] -= np.outer(err, Hi[i, i:])
            Err[:, i] = err
        W[:, i2:] -= Err @ Hinv[i1:i2, i2:]
    return Codes(codes=codes, scales=scales, zeros=zeros, perm=None if perm is None else perm.astype(np.int32))
