"""Numpy-only builders/readers for GPTQ and AWQ (GEMM) quantized linear layers.

Test helper, not collected by pytest (no test_ prefix). It writes the exact
on-disk tensors a Qwen2 GPTQ/AWQ checkpoint holds for one linear layer X
(X.qweight, X.qzeros, X.scales, X.g_idx) so loader tests can build tiny
checkpoints without torch, and it dequantises them independently of the
runtime. Conventions and their sources: docs/quant_formats_notes.md.

Shapes: N = out_features, K = in_features, G = number of groups.
Logical inputs are "row major like nn.Linear.weight": q [N, K], zeros/scales [N, G].
"""

import numpy as np

# AWQ GEMM nibble order inside one int32 (8 output columns per word): nibble i
# holds column AWQ_ORDER[i] of the block. Source: AutoAWQ
# awq/modules/linear/gemm.py WQLinear_GEMM.from_linear (order_map), identical in
# mit-han-lab/llm-awq awq/quantize/qmodule.py WQLinear.from_linear.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# Reading back: column j of a block sits in nibble AWQ_REVERSE_ORDER[j] (the
# inverse permutation). Source: vLLM awq_triton.py awq_dequantize_kernel
# (shifts = [0, 4, 1, 5, 2, 6, 3, 7] * 4) and AutoAWQ packing_utils.py
# AWQ_REVERSE_ORDER. Checked below as the inverse of AWQ_ORDER.
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)


def _group_len(K, group_size):
    # group_size == -1 means one group over all of K (AutoGPTQ QuantLinear.__init__).
    return K if group_size == -1 else group_size


def default_g_idx(K, group_size):
    """g_idx written when desc_act=False: g(k) = k // group_size."""
    return (np.arange(K) // _group_len(K, group_size)).astype(np.int32)


def act_order_g_idx(K, group_size, rng):
    """A desc_act=True style g_idx.

    GPTQ with act-order quantizes columns in the order perm (descending Hessian
    diagonal) and cuts groups along that order, then un-permutes g_idx
    (AutoGPTQ auto_gptq/quantization/gptq.py GPTQ.fasterquant: g_idx built as
    i // group_size over permuted positions, then g_idx = g_idx[invperm]).
    So g_idx[perm[j]] = j // group_size: groups are scattered over k.
    """
    perm = rng.permutation(K)
    g_idx = np.empty(K, dtype=np.int32)
    g_idx[perm] = np.arange(K) // _group_len(K, group_size)
    return g_idx


def random_codes(rng, N, K, bits, group_size, g_idx=None, zero_min=1):
    """Random (q [N,K], zeros [N,G], scales [N,G] float32 exactly representable in fp16).

    zero_min defaults to 1 because a zero point of 0 cannot be stored in the
    GPTQ v1 format (see pack_gptq); pass 0 for v2 / AWQ.
    """
    if g_idx is None:
        g_idx = default_g_idx(K, group_size)
    G = int(np.max(g_idx)) + 1
    maxq = (1 << bits) - 1
    q = rng.integers(0, maxq + 1, size=(N, K), dtype=np.int64)
    zeros = rng.integers(zero_min, maxq + 1, size=(N, G), dtype=np.int64)
    # Scales go through float16 on disk; draw them there so the round trip is exact.
    scales = rng.uniform(1e-3, 5e-2, size=(N, G)).astype(np.float16).astype(np.float32)
    return q, zeros, scales


def reference_weight(q, zeros, scales, g_idx):
    """The direct formula W[n,k] = s[n, g(k)] * (q[n,k] - z[n, g(k)]) in float32."""
    g = np.asarray(g_idx, dtype=np.int64)
    s = np.asarray(scales, dtype=np.float16).astype(np.float32)[:, g]
    d = (np.asarray(q, np.int64) - np.asarray(zeros, np.int64)[:, g]).astype(np.float32)
    return s * d


def _pack_low_first(vals, bits, axis):
    """Pack unsigned codes `bits` wide into uint32 along `axis`, element j of
    each run of 32/bits going to bits [bits*j, bits*j + bits) (lowest index in
    the lowest bits)."""
    per = 32 // bits
    v = np.moveaxis(np.asarray(vals, dtype=np.uint32), axis, -1)
    if v.shape[-1] % per:
        raise ValueError(f"packed axis length {v.shape[-1]} is not a multiple of {per}")
    v = v.reshape(v.shape[:-1] + (v.shape[-1] // per, per))
    word = np.zeros(v.shape[:-1], dtype=np.uint32)
    for j in range(per):
        word |= v[..., j] << np.uint32(bits * j)
    return np.moveaxis(word, -1, axis)


def _unpack_low_first(words, bits, axis):
    """Inverse of _pack_low_first: int32 words -> unsigned codes, axis grows by 32/bits."""
    per = 32 // bits
    w = np.moveaxis(np.asarray(words).view(np.uint32), axis, -1)  # uint32: logical shifts
    shifts = (np.arange(per, dtype=np.uint32) * np.uint32(bits))
    codes = (w[..., None] >> shifts) & np.uint32((1 << bits) - 1)
    codes = codes.reshape(w.shape[:-1] + (w.shape[-1] * per,))
    return np.moveaxis(codes.astype(np.int64), -1, axis)


def pack_gptq(q, zeros, scales, bits, group_size, g_idx=None, v1=True):
    """GPTQ on-disk tensors for one linear layer (AutoGPTQ QuantLinear.pack layout).

    qweight int32 [K*bits/32, N]: packed along K, k = row*(32/bits) + j in bits
            [bits*j, bits*j+bits) of qweight[row, n].
    qzeros  int32 [G, N*bits/32]: packed along N the same way.
    scales  float16 [G, N]; g_idx int32 [K].
    v1 (checkpoint_format "gptq") stores zero-1 (AutoGPTQ pack: `zeros -= 1`);
    v2 ("gptq_v2", GPTQModel) stores the zero itself.
    """
    if bits not in (2, 4, 8):
        raise ValueError("only 2/4/8-bit GPTQ packs evenly into int32")
    q = np.asarray(q, np.int64)
    zeros = np.asarray(zeros, np.int64)
    N, K = q.shape
    maxq = (1 << bits) - 1
    if g_idx is None:
        g_idx = default_g_idx(K, group_size)
    g_idx = np.asarray(g_idx, dtype=np.int32)
    if g_idx.shape != (K,) or zeros.shape[1] <= int(g_idx.max()):
        raise ValueError("g_idx must be [K] and index the G columns of zeros/scales")
    if q.min() < 0 or q.max() > maxq or zeros.min() < 0 or zeros.max() > maxq:
        raise ValueError("codes and zeros must lie in 0..2^bits-1")
    stored = zeros - 1 if v1 else zeros
    if v1 and (stored < 0).any():
        # v1 cannot hold zero == 0: AutoGPTQ would OR 0xFFFFFFFF into the word,
        # GPTQModel's word-wise v2->v1 subtraction borrows from the neighbour,
        # and readers mask-then-add-1 (reading 2^bits). Refuse instead.
        raise ValueError("GPTQ v1 cannot store a zero point of 0; use v1=False (gptq_v2)")
    return {
        "qweight": _pack_low_first(q.T, bits, axis=0).view(np.int32),
        "qzeros": _pack_low_first(stored.T, bits, axis=1).view(np.int32),
        "scales": np.asarray(scales, np.float32).T.astype(np.float16),
        "g_idx": g_idx,
    }


def dequant_gptq(tensors, bits, v1=True):
    """float32 W [N, K] from GPTQ tensors, written from the format description:
    unpack low-bits-first, zero = stored (+1 in v1), W = s[g] * (q - z[g])."""
    q_kn = _unpack_low_first(tensors["qweight"], bits, axis=0)      # [K, N]
    z_gn = _unpack_low_first(tensors["qzeros"], bits, axis=1)       # [G, N]
    if v1:
        z_gn = z_gn + 1  # mask first, then +1 (AutoGPTQ/vLLM readers): 0xF reads as 16
    K, G = q_kn.shape[0], z_gn.shape[0]
    # Very old checkpoints may lack g_idx; then groups are contiguous runs of K // G.
    g = tensors.get("g_idx")
    g = np.arange(K) // (K // G) if g is None else np.asarray(g, dtype=np.int64)
    s_gn = np.asarray(tensors["scales"]).astype(np.float32)
    w_kn = s_gn[g] * (q_kn - z_gn[g]).astype(np.float32)
    return np.ascontiguousarray(w_kn.T)


def pack_awq(q, zeros, scales, group_size):
    """AWQ GEMM on-disk tensors (4 bit): qweight int32 [K, N/8], qzeros int32
    [G, N/8], both packed along N with AWQ_ORDER; scales float16 [G, N].
    Zeros are stored as is (no offset); no g_idx (groups are k // group_size)."""
    q = np.asarray(q, np.int64)
    zeros = np.asarray(zeros, np.int64)
    N, K = q.shape
    if N % 8 or K % _group_len(K, group_size):
        raise ValueError("AWQ needs N % 8 == 0 and K % group_size == 0")
    if zeros.shape[1] != K // _group_len(K, group_size):
        raise ValueError("zeros must be [N, K // group_size]")
    if q.min() < 0 or q.max() > 15 or zeros.min() < 0 or zeros.max() > 15:
        raise ValueError("AWQ codes and zeros must lie in 0..15")
    order = np.array(AWQ_ORDER)

    def pack_cols(m_xn):  # [X, N] -> [X, N/8]: nibble i <- column 8*c + AWQ_ORDER[i]
        blocks = m_xn.reshape(m_xn.shape[0], N // 8, 8)[:, :, order]
        return _pack_low_first(blocks.reshape(m_xn.shape[0], N), 4, axis=1).view(np.int32)

    return {
        "qweight": pack_cols(q.T),
        "qzeros": pack_cols(zeros.T),
        "scales": np.asarray(scales, np.float32).T.astype(np.float16),
    }


def dequant_awq(tensors, group_size):
    """float32 W [N, K] from AWQ GEMM tensors: nibble i of a word is read
    low-first, column j of the block is nibble AWQ_REVERSE_ORDER[j];
    W = (q - z) * s, group k // group_size."""
    rev = np.array(AWQ_REVERSE_ORDER)

    def unpack_cols(words):  # [X, N/8] -> [X, N]
        nib = _unpack_low_first(words, 4, axis=1)                   # nibble order
        X, N = nib.shape
        return nib.reshape(X, N // 8, 8)[:, :, rev].reshape(X, N)

    q_kn = unpack_cols(tensors["qweight"])
    z_gn = unpack_cols(tensors["qzeros"])
    K = q_kn.shape[0]
    g = np.arange(K) // _group_len(K, group_size)
    s_gn = np.asarray(tensors["scales"]).astype(np.float32)
    w_kn = (q_kn - z_gn[g]).astype(np.float32) * s_gn[g]
    return np.ascontiguousarray(w_kn.T)


def _self_check():
    rng = np.random.default_rng(0)
    assert tuple(np.argsort(AWQ_ORDER)) == AWQ_REVERSE_ORDER

    # Known answers, independent of pack_*: these pin the bit order itself.
    # GPTQ 4-bit, q[n,k] = k: word = 0x76543210 (k=0 in the lowest nibble).
    q = np.tile(np.arange(8), (8, 1))
    t = pack_gptq(q, np.full((8, 1), 8), np.ones((8, 1)), 4, -1)
    assert t["qweight"].shape == (1, 8) and t["qweight"].dtype == np.int32
    assert (t["qweight"].view(np.uint32) == 0x76543210).all()
    # sym=True: zero 8 stored as 7 in v1 -> 0x77777777 == 2004318071 per word.
    assert (t["qzeros"] == 2004318071).all() and t["qzeros"].shape == (1, 1)
    assert (t["g_idx"] == 0).all()
    # Top nibble >= 8 gives a negative int32, exactly as checkpoints store it.
    q[:, 7] = 15
    w = pack_gptq(q, np.full((8, 1), 8), np.ones((8, 1)), 4, -1)["qweight"]
    assert (w == np.uint32(0xF6543210).astype(np.int32)).all() and (w < 0).all()
    # GPTQ 8-bit: 4 codes per word, sym zero 128 stored as 127 -> 0x7F7F7F7F.
    t = pack_gptq(np.tile(np.arange(4), (4, 1)), np.full((4, 1), 128), np.ones((4, 1)), 8, -1)
    assert (t["qweight"].view(np.uint32) == 0x03020100).all()
    assert (t["qzeros"].view(np.uint32) == 0x7F7F7F7F).all()
    # AWQ, q[n,k] = n: nibble i holds column AWQ_ORDER[i] -> 0x75316420.
    t = pack_awq(np.tile(np.arange(8)[:, None], (1, 4)), np.zeros((8, 1), int), np.ones((8, 1)), -1)
    assert t["qweight"].shape == (4, 1) and (t["qweight"].view(np.uint32) == 0x75316420).all()

    # Round trips against the direct formula (bit-exact: same float32 ops).
    N, K = 64, 256
    for bits in (4, 8):
        for gs in (32, 128, -1):
            for act in (False, True):
                for v1 in (True, False):
                    g_idx = act_order_g_idx(K, gs, rng) if act else default_g_idx(K, gs)
                    q, z, s = random_codes(rng, N, K, bits, gs, g_idx, zero_min=1 if v1 else 0)
                    t = pack_gptq(q, z, s, bits, gs, g_idx, v1=v1)
                    G = K // (K if gs == -1 else gs)
                    assert t["qweight"].shape == (K * bits // 32, N)
                    assert t["qzeros"].shape == (G, N * bits // 32)
                    assert t["scales"].shape == (G, N) and t["scales"].dtype == np.float16
                    assert t["g_idx"].dtype == np.int32 and t["g_idx"].shape == (K,)
                    if act and gs != -1:  # every group still has gs members
                        assert (np.bincount(t["g_idx"]) == gs).all()
                    assert np.array_equal(dequant_gptq(t, bits, v1=v1),
                                          reference_weight(q, z, s, g_idx))
                    if not act:  # a missing g_idx falls back to k // group_size
                        t2 = {k: v for k, v in t.items() if k != "g_idx"}
                        assert np.array_equal(dequant_gptq(t2, bits, v1=v1),
                                              reference_weight(q, z, s, g_idx))
                    if v1:
                        # GPTQModel convert_gptq_v1_to_v2_format adds 0x11111111
                        # (4 bit) / 0x01010101 (8 bit) to each word; with zeros >= 1
                        # that equals the per-field +1 we apply.
                        one = {4: 0x11111111, 8: 0x01010101}[bits]
                        v2 = pack_gptq(q, z, s, bits, gs, g_idx, v1=False)["qzeros"]
                        assert np.array_equal((t["qzeros"].view(np.uint32) + np.uint32(one)),
                                              v2.view(np.uint32))
    try:
        pack_gptq(np.zeros((8, 8), int), np.zeros((8, 1), int), np.ones((8, 1)), 4, -1)
        raise AssertionError("v1 zero 0 must be refused")
    except ValueError:
        pass

    for gs in (32, 128, -1):
        q, z, s = random_codes(rng, N, K, 4, gs, zero_min=0)
        t = pack_awq(q, z, s, gs)
        G = K // (K if gs == -1 else gs)
        assert t["qweight"].shape == (K, N // 8) and t["qzeros"].shape == (G, N // 8)
        assert t["qweight"].dtype == np.int32 and t["scales"].dtype == np.float16
        assert np.array_equal(dequant_awq(t, gs), reference_weight(q, z, s, default_g_idx(K, gs)))
        # The AWQ layout is not the GPTQ one: reading it as plain low-first along N fails.
        plain = _unpack_low_first(t["qweight"], 4, axis=1)
        assert not np.array_equal(plain, q.T)
    print("quant_checkpoint self-checks passed")


if __name__ == "__main__":
    _self_check()


def assert_logits_close(got, want, isa):
    """Quantized-model logits against the dequantized fp32 twin's. On AVX2 the
    integer kernels keep fp32 activations: equal up to fp32 summation order. On
    AVX-512 BF16 / AMX they round activations to bf16 (as the bf16 GEMMs do),
    an error that the tiny random models amplify through their layers: bounded
    relative to the logits' scale, and small on average."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and np.isfinite(got).all()
    if isa == "avx2":
        np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)
        return
    diff = np.abs(got - want)
    scale = np.abs(want).max()
    assert diff.max() <= 0.04 * scale, (diff.max(), scale)
    assert diff.mean() <= 0.004 * scale, (diff.mean(), scale)
