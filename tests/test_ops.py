"""Every CPU op against a numpy/torch reference on small odd shapes, for each
weight dtype and each kernel ISA this machine has."""
import numpy as np
import pytest
import torch

import fastdllm_rt
from fastdllm_rt._C import _testing as T

ops = T.ops
ROWS = [1, 7, 17, 33, 127]
RNG = np.random.default_rng(1234)


def as_dtype(w: np.ndarray, dtype: str):
    """(array to pass, dtype name, fp32 values the kernel should see)."""
    t = torch.from_numpy(w)
    if dtype == "float32":
        return w, "", w
    td = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    low = t.to(td)
    return low.view(torch.int16).numpy().view(np.uint16), dtype, low.float().numpy()


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("k,n", [(37, 23), (64, 48), (80, 331), (136, 80)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_linear(isa, rows, k, n, dtype):
    x, w, b, r = randn(rows, k), randn(n, k), randn(n), randn(rows, n)
    wp, wd, wf = as_dtype(w, dtype)
    ref = x.astype(np.float64) @ wf.T.astype(np.float64)
    out = ops.linear(x, wp, weight_dtype=wd)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    out = ops.linear(x, wp, bias=b, residual=r, weight_dtype=wd)
    np.testing.assert_allclose(out, ref + b + r, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("k,n", [(37, 23), (64, 48), (80, 331), (136, 80), (1536, 40)])
def test_linear_packed_bf16(isa, rows, k, n):
    x, w, b, r = randn(rows, k), randn(n, k), randn(n), randn(rows, n)
    wp, _, wf = as_dtype(w, "bfloat16")
    packed = ops.pack_bf16(wp)
    out = ops.linear(x, packed, bias=b, residual=r, weight_dtype="bfloat16", packed=True)
    if isa == "avx2":  # exact upcast, fp32 FMA
        xs = x
    else:  # vdpbf16ps: the activations are rounded to bf16 (nearest even), products exact in fp32
        xs = torch.from_numpy(x).bfloat16().float().numpy()
    ref = xs.astype(np.float64) @ wf.T.astype(np.float64) + b + r
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=2e-5 * np.sqrt(k))
    # the packed embedding gather reads the same rows back
    ids = RNG.integers(0, n, 9).astype(np.int32)
    np.testing.assert_array_equal(ops.embedding(packed[0], ids, table_dtype="bfloat16", packed=True, rows=n, cols=k), wf[ids])


def test_linear_bf16_bias(isa):
    x, w, b = randn(5, 24), randn(9, 24), randn(9)
    bp, bd, bf = as_dtype(b, "bfloat16")
    np.testing.assert_allclose(ops.linear(x, w, bias=bp, bias_dtype=bd), x @ w.T + bf, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rms_norm(rows, dtype):
    h = 80
    x, w = randn(rows, h) * 3, randn(h)
    wp, wd, wf = as_dtype(w, dtype)
    xt = torch.from_numpy(x)
    ref = wf * (xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + 1e-6)).numpy()
    np.testing.assert_allclose(ops.rms_norm(x, wp, 1e-6, weight_dtype=wd), ref, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_embedding(rows, dtype):
    table = randn(331, 48)
    tp, td, tf = as_dtype(table, dtype)
    ids = RNG.integers(0, 331, rows).astype(np.int32)
    np.testing.assert_array_equal(ops.embedding(tp, ids, table_dtype=td), tf[ids])


def test_embedding_rejects_out_of_vocab_id():
    with pytest.raises(ValueError, match="token id 331 at index 1 is outside the vocabulary"):
        ops.embedding(randn(331, 8), np.array([0, 331], np.int32))


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("heads,hd", [(1, 2), (5, 16), (3, 64)])
def test_rope(rows, heads, hd):
    x = randn(rows, heads, hd)
    pos = RNG.integers(0, 5000, rows).astype(np.int32)
    inv = (1.0 / (1e6 ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))).numpy()
    freqs = torch.from_numpy(pos).float()[:, None] * torch.from_numpy(inv)[None]
    emb = torch.cat([freqs, freqs], -1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    xt = torch.from_numpy(x)
    rot = torch.cat([-xt[..., hd // 2:], xt[..., :hd // 2]], -1)
    ref = (xt * cos + rot * sin).numpy()
    np.testing.assert_allclose(ops.rope(x, pos, inv), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", ROWS)
def test_silu_mul_and_add(rows):
    gu = randn(rows, 2 * 37) * 4
    g, u = torch.from_numpy(gu[:, :37]), torch.from_numpy(gu[:, 37:])
    np.testing.assert_allclose(ops.silu_mul(gu), (torch.nn.functional.silu(g) * u).numpy(), rtol=1e-5, atol=1e-6)
    a, b = randn(rows, 19), randn(rows, 19)
    np.testing.assert_array_equal(ops.add(a, b), a + b)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("vocab", [1, 2, 331, 5003])
def test_argmax_prob(rows, vocab):
    logits = randn(rows, vocab) * 4
    if vocab > 2:
        logits[0, 1] = logits[0, 2] = logits[0].max() + 1  # tie: the first index wins
    idx, prob = ops.argmax_prob(logits)
    p = torch.softmax(torch.from_numpy(logits), -1)
    conf, ref_idx = p.max(-1)
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    np.testing.assert_allclose(prob, conf.numpy(), rtol=1e-5)


def top2_reference(logits):
    """First maximum and first maximum among the others, with their softmax
    probabilities and the softmax entropy (float64)."""
    p = torch.softmax(torch.from_numpy(logits).double(), -1).numpy()
    order = np.lexsort((np.arange(logits.shape[1])[None].repeat(len(logits), 0), -logits), axis=1)
    idx = order[:, :2]
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)
    top = np.take_along_axis(p, idx, 1)
    tail = np.sort(p, 1)[:, :-1].sum(1)  # 1 - p1, summed without cancellation
    return idx, np.concatenate([top, entropy[:, None], tail[:, None]], 1)


@pytest.mark.parametrize("rows", [1, 3, 8, 33])
@pytest.mark.parametrize("k,vocab", [(37, 1), (40, 23), (64, 2049), (136, 5003)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "packed"])
def test_lm_head_top2(isa, rows, k, vocab, dtype):
    """The fused lm_head + reduction against the unfused linear of the same
    kernel: vocabularies below, at and across the 2048-column chunks, ties."""
    x, w = randn(rows, k), randn(vocab, k)
    if vocab > 40:
        w[vocab - 3] = w[5]  # an exact tie across chunks: the lower index wins
        w[2100 % vocab] = w[5]
        x[0] = w[5] * 3  # make the tied rows row 0's maximum
    wp, wd, _ = as_dtype(w, "float32" if dtype == "float32" else "bfloat16")
    weight = ops.pack_bf16(wp) if dtype == "packed" else wp
    logits = ops.linear(x, weight, weight_dtype=wd, packed=dtype == "packed")
    idx, prob = ops.lm_head_top2(x, weight, weight_dtype=wd, packed=dtype == "packed")
    assert idx.shape == (rows, 2) and prob.shape == (rows, 4)
    if vocab == 1:
        np.testing.assert_array_equal(idx, [[0, -1]] * rows)
        np.testing.assert_allclose(prob, [[1.0, 0.0, 0.0, 0.0]] * rows, atol=1e-7)
        return
    ref_idx, ref_prob = top2_reference(logits)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(prob[:, :2], ref_prob[:, :2], rtol=2e-6, atol=1e-12)
    # the entropy from one extra accumulator (log Z - E[logit]): fp32 exps, double sums
    np.testing.assert_allclose(prob[:, 2], ref_prob[:, 2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prob[:, 3], ref_prob[:, 3], rtol=1e-5, atol=1e-30)  # 1 - p1, relative
    if vocab > 40:
        assert idx[0, 0] == 5 and idx[0, 1] == min(2100 % vocab, vocab - 3)


def test_lm_head_top2_tail_mass_keeps_peaked_rows_apart(isa):
    """Rows whose top probability rounds to 1 in fp32 still differ in 1 - p1
    (what the float64 confidence rules of Fast-dLLM v1 compare)."""
    k, vocab = 16, 300
    w = randn(vocab, k)
    scales = np.linspace(0.5, 12, 200)
    _, tails = top2_reference(ops.linear(np.stack([w[7] * s for s in scales]).astype(np.float32), w))
    picked = [s for s, t in zip(scales, tails[:, 3]) if 1e-14 < t < 3e-8][::4][:3]  # p1 rounds to 1 in fp32
    assert len(picked) == 3
    x = np.stack([w[7] * s for s in picked]).astype(np.float32)
    idx, prob = ops.lm_head_top2(x, w)
    assert (idx[:, 0] == 7).all() and (prob[:, 0] == 1.0).all()
    _, ref = top2_reference(ops.linear(x, w))
    np.testing.assert_allclose(prob[:, 3], ref[:, 3], rtol=1e-4)
    assert prob[0, 3] > prob[1, 3] > prob[2, 3] > 0


def test_lm_head_top2_errors():
    x, w = randn(2, 8), randn(5, 8)
    with pytest.raises(ValueError, match="lm_head_top2: weight .* does not match x"):
        ops.lm_head_top2(x, randn(5, 9))
    with pytest.raises(ValueError, match="lm_head_top2: .*float type"):
        ops.lm_head_top2(x, w.astype(np.int32))


def bf16_bits_to_f32(bits):
    return torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()


@pytest.mark.parametrize("rows", [1, 7, 33])
def test_gemm_operands_in_bf16(isa, rows):
    """rms_norm / silu_mul can write the bf16 operand of the next GEMM (the fp32
    result rounded to nearest even), and linear takes it as x."""
    x, w, gu = randn(rows, 40), randn(40), randn(rows, 2 * 24)
    for got, ref in ((ops.rms_norm(x, w, 1e-6, out_dtype="bfloat16"), ops.rms_norm(x, w, 1e-6)),
                     (ops.silu_mul(gu, out_dtype="bfloat16"), ops.silu_mul(gu))):
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(bf16_bits_to_f32(got), torch.from_numpy(ref).bfloat16().float().numpy())
    h = ops.rms_norm(x, w, 1e-6, out_dtype="bfloat16")
    wl, b = randn(9, 40), randn(9)
    np.testing.assert_allclose(ops.linear(h, wl, bias=b, x_dtype="bfloat16"),
                               ops.linear(bf16_bits_to_f32(h), wl, bias=b), rtol=1e-6, atol=1e-6)
    # attention writes the o_proj operand the same way
    pool = T.PagePool(1, 2, 8, 4, 8)
    table = T.PageTable(pool)
    table.reserve_tokens(9)
    q, k, v = randn(rows, 4, 8), randn(9, 2, 8), randn(9, 2, 8)
    a32 = ops.paged_attention(q, k, v, pool, list(table.pages), 0.3)
    a16 = ops.paged_attention(q, k, v, pool, list(table.pages), 0.3, out_dtype="bfloat16")
    np.testing.assert_array_equal(bf16_bits_to_f32(a16), torch.from_numpy(a32).bfloat16().float().numpy())
    with pytest.raises(ValueError, match="out_dtype must be"):
        ops.silu_mul(gu, out_dtype="int8")
    # fp16 operands are a CUDA form: the CPU's GEMMs take fp32 activations with fp16 weights
    for call in (lambda: ops.silu_mul(gu, out_dtype="float16"), lambda: ops.rms_norm(x, w, 1e-6, out_dtype="float16"),
                 lambda: ops.paged_attention(q, k, v, pool, list(table.pages), 0.3, out_dtype="float16")):
        with pytest.raises(ValueError, match=r"'out' must be float32 or bfloat16 \(or float16 on cuda\)"):
            call()
    with pytest.raises(ValueError, match="linear: 'x' must be float32 or bfloat16"):
        ops.linear(x.astype(np.float16), wl)


@pytest.mark.parametrize("rows", [1, 2, 3, 8, 17])
@pytest.mark.parametrize("k,inter", [(37, 16), (64, 48), (1536, 80)])
def test_linear_silu_mul_fused(isa, rows, k, inter):
    """The gate/up GEMM with SiLU*mul in its epilogue equals the two-step path
    on the same kernel, bit for bit."""
    x, gate, up = randn(rows, k), randn(inter, k), randn(inter, k)
    g16, u16 = as_dtype(gate, "bfloat16")[0], as_dtype(up, "bfloat16")[0]
    fused = ops.linear_silu_mul(x, ops.pack_gate_up(g16, u16))
    two_step = ops.silu_mul(ops.linear(x, ops.pack_bf16(np.concatenate([g16, u16])), weight_dtype="bfloat16",
                                       packed=True))
    np.testing.assert_array_equal(fused, two_step)


def test_linear_silu_mul_errors():
    g16 = as_dtype(randn(20, 8), "bfloat16")[0]
    with pytest.raises(ValueError, match="pack_gate_up: rows must be a multiple of 16"):
        ops.pack_gate_up(g16, g16)
    g16 = as_dtype(randn(16, 8), "bfloat16")[0]
    with pytest.raises(ValueError, match="linear_silu_mul: weight .* does not match x"):
        ops.linear_silu_mul(randn(2, 9), ops.pack_gate_up(g16, g16))


def test_gather_rows():
    x = randn(9, 13)
    rows = np.array([8, 0, 4, 4], np.int32)
    np.testing.assert_array_equal(ops.gather_rows(x, rows), x[rows])
    with pytest.raises(ValueError, match="gather_rows: row 9 at index 1 is outside"):
        ops.gather_rows(x, np.array([0, 9], np.int32))


def ref_attention(q, k, v, allowed, scale):
    qt, kt, vt = (torch.from_numpy(a).transpose(0, 1) for a in (q, k, v))
    rep = qt.shape[0] // kt.shape[0]
    kt, vt = kt.repeat_interleave(rep, 0), vt.repeat_interleave(rep, 0)
    s = (qt @ kt.transpose(1, 2)) * scale
    s = s.masked_fill(~torch.from_numpy(allowed)[None], float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return (p @ vt).transpose(0, 1).reshape(q.shape[0], -1).numpy()


def bf16_round(a):
    return torch.from_numpy(a).to(torch.bfloat16).float().numpy()


@pytest.mark.parametrize("lq,n_kv", [(1, 1), (7, 40), (17, 17), (33, 100), (127, 130)])
@pytest.mark.parametrize("heads,kv_heads,hd", [(5, 1, 16), (4, 2, 8), (3, 3, 2)])
@pytest.mark.parametrize("mode", ["none", "limit"])
@pytest.mark.parametrize("kv_dtype", ["float32", "bfloat16"])
def test_paged_attention(lq, n_kv, heads, kv_heads, hd, mode, kv_dtype):
    page = 8
    pool = T.PagePool(1, kv_heads, hd, page, 64, kv_dtype=kv_dtype)
    table = T.PageTable(pool)
    table.reserve_tokens(n_kv)
    pages = list(table.pages)[::-1]  # a non-trivial page order
    q, k, v = randn(lq, heads, hd), randn(n_kv, kv_heads, hd), randn(n_kv, kv_heads, hd)
    allowed = np.ones((lq, n_kv), bool)
    limit = None
    if mode == "limit":
        limit = RNG.integers(1, n_kv + 1, lq).astype(np.int32)
        allowed &= np.arange(n_kv)[None, :] < limit[:, None]
    scale = hd ** -0.5
    out = ops.paged_attention(q, k, v, pool, pages, scale, kv_limit=limit)
    if kv_dtype == "bfloat16":  # the pages hold K/V rounded to bf16; the math is fp32 either way
        k, v = bf16_round(k), bf16_round(v)
    np.testing.assert_allclose(out, ref_attention(q, k, v, allowed, scale), rtol=1e-5, atol=1e-5)


def ragged_batch(lens_q, lens_kv, page, kv_heads, hd, pool):
    """Sequences with their own pages (allocated interleaved) and dense K/V written to them."""
    tables = [T.PageTable(pool) for _ in lens_q]
    for step in range(max(-(-n // page) for n in lens_kv)):  # one page each in turn: interleaved page ids
        for t, n in zip(tables, lens_kv):
            if len(t.pages) * page < n:
                t.reserve_tokens((len(t.pages) + 1) * page)
    kv_indptr = np.cumsum([0] + [len(t.pages) for t in tables]).astype(np.int32)
    kv_indices = np.concatenate([t.pages for t in tables]).astype(np.int32)
    ks = [randn(n, kv_heads, hd) for n in lens_kv]
    vs = [randn(n, kv_heads, hd) for n in lens_kv]
    qo_w = np.cumsum([0] + list(lens_kv)).astype(np.int32)
    ops.kv_write(pool, np.concatenate(ks), np.concatenate(vs), qo_w, kv_indptr, kv_indices,
                 np.zeros(len(lens_kv), np.int32))
    return tables, kv_indptr, kv_indices, ks, vs


def ragged_attention_alone(pool, kv_heads, hd, lens_q, lens_kv, heads, scale, min_limit=0):
    """A ragged batch (sequences with different query and key lengths and their
    own page tables, random key limits >= min_limit) through ops.attention:
    asserts that every query gets bit for bit what its sequence alone gets.
    Returns the batch's output and per sequence (q, k, v, allowed keys, alone)."""
    tables, kv_indptr, kv_indices, ks, vs = ragged_batch(lens_q, lens_kv, pool.page_size, kv_heads, hd, pool)
    qs = [randn(n, heads, hd) for n in lens_q]
    limits = [RNG.integers(min_limit, nk + 1, nq).astype(np.int32) for nq, nk in zip(lens_q, lens_kv)]
    if min_limit == 0:
        limits[0][0] = 0  # a query that sees no key: zeros
    qo = np.cumsum([0] + lens_q).astype(np.int32)
    out = ops.attention(np.concatenate(qs), pool, np.concatenate(limits), qo, kv_indptr, kv_indices, scale)
    seqs = []
    for s in range(len(lens_q)):
        alone = ops.attention(qs[s], pool, limits[s], np.array([0, lens_q[s]], np.int32),
                              np.array([0, len(tables[s].pages)], np.int32), np.array(tables[s].pages, np.int32),
                              scale)
        np.testing.assert_array_equal(out[qo[s]:qo[s + 1]], alone)
        allowed = np.arange(lens_kv[s])[None, :] < limits[s][:, None]
        seqs.append((qs[s], ks[s], vs[s], allowed, alone))
    return out, seqs


@pytest.mark.parametrize("kv_dtype", ["float32", "bfloat16"])
def test_ragged_attention_rows_equal_their_sequence_alone(isa, kv_dtype):
    """A ragged batch gives every query exactly what its sequence alone gives,
    and what the reference gives."""
    pool = T.PagePool(1, 2, 16, 8, 64, kv_dtype=kv_dtype)
    out, seqs = ragged_attention_alone(pool, 2, 16, [5, 1, 17, 8], [40, 3, 17, 64], heads=6, scale=0.25)
    assert np.all(out[0] == 0)
    for q, k, v, allowed, alone in seqs:
        if kv_dtype == "bfloat16":
            k, v = bf16_round(k), bf16_round(v)
        np.testing.assert_allclose(alone, ref_attention(q, k, v, allowed, 0.25), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", [1, 7, 264])
@pytest.mark.parametrize("lens_q,lens_kv", [([1], [1]), ([5, 1, 17, 8], [40, 3, 17, 64]), ([32, 8, 32], [96, 0, 33])])
def test_attention_plan_emulation_equals_attention(target, lens_q, lens_kv):
    """The CUDA kernel's split / merge over plans::plan_attention, emulated on
    the CPU, equals the CPU attention: the plan covers every key of every query
    once, in partial slots that line up (small targets force many splits)."""
    page, heads, kv_heads, hd = 8, 4, 2, 8
    pool = T.PagePool(1, kv_heads, hd, page, 64)
    tables, kv_indptr, kv_indices, _, _ = ragged_batch(lens_q, [max(n, 1) for n in lens_kv], page, kv_heads, hd,
                                                       pool)
    q = randn(sum(lens_q), heads, hd)
    limits = np.concatenate([np.full(nq, nk, np.int32) for nq, nk in zip(lens_q, lens_kv)])
    limits[::3] = limits[::3] // 2  # some queries see fewer keys than their sequence's longest
    qo = np.cumsum([0] + lens_q).astype(np.int32)
    want = ops.attention(q, pool, limits, qo, kv_indptr, kv_indices, 0.3)
    got, plan = T.attention_by_plan(q, pool, limits, qo, kv_indptr, kv_indices, 0.3, target_ctas=target)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert len(plan["work"]) // 5 <= T.plans.work_capacity(sum(lens_q), len(lens_q), kv_heads, target)
    assert plan["num_parts"] <= T.plans.parts_capacity(sum(lens_q), kv_heads, target)


def test_attention_query_with_no_visible_key_is_zero():
    pool = T.PagePool(1, 1, 4, 4, 2)
    table = T.PageTable(pool)
    table.reserve_tokens(3)
    out = ops.paged_attention(randn(2, 1, 4), randn(3, 1, 4), randn(3, 1, 4), pool, list(table.pages), 0.5,
                              kv_limit=np.array([0, 1], np.int32))
    assert np.all(out[0] == 0) and np.all(np.isfinite(out[1]))


def test_attention_batch_errors_name_the_sequence():
    pool = T.PagePool(1, 1, 4, 4, 4)
    q = randn(3, 1, 4)
    one = np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match=r"attention: token 2 sees 9 keys, outside the 8 slots of its sequence"):
        ops.attention(q, pool, np.array([1, 1, 9], np.int32), np.array([0, 1, 3], np.int32),
                      np.array([0, 1, 3], np.int32), np.array([0, 1, 2], np.int32), 0.5)
    with pytest.raises(ValueError, match=r"sequence 0 page table entry 0 \(page 7\) is outside the 4 pages"):
        ops.attention(q[:1], pool, np.array([1], np.int32), one, one, np.array([7], np.int32), 0.5)
    with pytest.raises(ValueError, match="qo_indptr must run from 0 to num_tokens"):
        ops.attention(q[:1], pool, np.zeros(1, np.int32), np.array([1, 1], np.int32), one, np.array([0], np.int32), 0.5)


def test_op_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"linear: weight float32\[4, 3\] on cpu does not match x"):
        ops.linear(randn(2, 5), randn(4, 3))
    with pytest.raises(ValueError, match="rms_norm: weight"):
        ops.rms_norm(randn(2, 5), randn(4), 1e-6)
    with pytest.raises(ValueError, match="silu_mul: gate_up"):
        ops.silu_mul(randn(2, 5))
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        ops.linear(randn(2, 4), randn(4, 4), weight_dtype="int4")
    # still usable afterwards
    assert ops.linear(randn(2, 4), randn(3, 4)).shape == (2, 3)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("heads,kv_heads,hd", [(5, 1, 16), (12, 2, 128)])
@pytest.mark.parametrize("kv_dtype", ["float32", "bfloat16"])
def test_qkv_rope_append_equals_rope_then_write(rows, heads, kv_heads, hd, kv_dtype):
    """The fused split + RoPE + append gives the same q and the same cache as
    rope() on q and k followed by kv_write(), for a batch of two sequences
    (the second writing from slot 5 on, after zeros)."""
    qkv = randn(rows, (heads + 2 * kv_heads) * hd)
    pos = RNG.integers(0, 3000, rows).astype(np.int32)
    inv = (1.0 / (1e6 ** (np.arange(0, hd, 2) / hd))).astype(np.float32)
    q = np.ascontiguousarray(qkv[:, :heads * hd].reshape(rows, heads, hd))
    k = np.ascontiguousarray(qkv[:, heads * hd:(heads + kv_heads) * hd].reshape(rows, kv_heads, hd))
    v = np.ascontiguousarray(qkv[:, (heads + kv_heads) * hd:].reshape(rows, kv_heads, hd))
    n0 = rows // 2  # sequence 0 takes the first n0 rows at slot 0, sequence 1 the rest at slot 5
    probe = randn(3, heads, hd)

    def cache(fill):
        pool = T.PagePool(1, kv_heads, hd, 16, 40, kv_dtype=kv_dtype)
        a, b = T.PageTable(pool), T.PageTable(pool)
        a.reserve_tokens(max(n0, 1))
        b.reserve_tokens(rows - n0 + 5)
        kv_indptr = np.array([0, len(a.pages), len(a.pages) + len(b.pages)], np.int32)
        kv_indices = np.array(list(a.pages) + list(b.pages)[::-1], np.int32)
        z = np.zeros((rows - n0 + 5, kv_heads, hd), np.float32)
        ops.kv_write(pool, z, z, np.array([0, 0, len(z)], np.int32), kv_indptr, kv_indices,
                     np.array([0, 0], np.int32))
        qo = np.array([0, n0, rows], np.int32)
        out = fill(pool, qo, kv_indptr, kv_indices, np.array([0, 5], np.int32))
        seen = []
        for s, n in ((0, n0), (1, rows - n0 + 5)):
            one = np.array([0, 3], np.int32)
            seen.append(ops.attention(probe, pool, np.full(3, n, np.int32), one,
                                      np.array([0, kv_indptr[s + 1] - kv_indptr[s]], np.int32),
                                      kv_indices[kv_indptr[s]:kv_indptr[s + 1]], 0.1))
        return seen, out

    fused, q_fused = cache(lambda p, qo, ip, ix, wo: ops.qkv_rope_append(qkv, inv, heads, p, pos, qo, ip, ix, wo))
    k_rot = ops.rope(k, pos, inv)
    split, _ = cache(lambda p, qo, ip, ix, wo: ops.kv_write(p, k_rot, v, qo, ip, ix, wo))
    np.testing.assert_array_equal(q_fused, ops.rope(q, pos, inv))
    for f, s in zip(fused, split):
        np.testing.assert_array_equal(f, s)


AMX = fastdllm_rt.cpu_isa() == "amx_bf16"


@pytest.mark.skipif(not AMX, reason="no AMX on this CPU")
@pytest.mark.parametrize("lens_q,lens_kv", [([32], [544]), ([1], [17]), ([5, 1, 17, 8], [40, 3, 100, 64])])
@pytest.mark.parametrize("heads,kv_heads,hd", [(12, 2, 128), (4, 2, 64), (6, 1, 32)])
def test_amx_attention(monkeypatch, lens_q, lens_kv, heads, kv_heads, hd):
    """bf16 pages on an AMX CPU take the tile kernel (cpu/attention_amx.cc): Q and
    P rounded to bf16 as PyTorch's bf16 attention, so within bf16 rounding of the
    fp32 reference; and every sequence of a ragged batch gets bit for bit what it
    gets alone."""
    monkeypatch.setenv("FASTDLLM_ISA", "amx")
    pool = T.PagePool(1, kv_heads, hd, 16, 128, kv_dtype="bfloat16")
    scale = hd ** -0.5
    _, seqs = ragged_attention_alone(pool, kv_heads, hd, lens_q, lens_kv, heads, scale, min_limit=1)
    for q, k, v, allowed, alone in seqs:
        ref = ref_attention(q, bf16_round(k), bf16_round(v), allowed, scale)
        # bf16 Q and P (relative 2^-9 each): well under 1% of the output scale
        assert np.abs(alone - ref).max() <= 8e-3 * np.abs(ref).max()


@pytest.mark.skipif(not AMX, reason="no AMX on this CPU")
@pytest.mark.parametrize("rows", [1, 8, 16, 17, 32, 33, 128])
@pytest.mark.parametrize("k,n", [(1536, 2048), (80, 331), (8960, 64)])
def test_amx_linear_within_fp32_rounding_of_avx512(monkeypatch, rows, k, n):
    """The AMX GEMM and the AVX-512 BF16 one take the same bf16 inputs; their
    fp32 accumulations differ only in order (a few ulp of the sum of |terms|)."""
    x, w = randn(rows, k), randn(n, k)
    packed = ops.pack_bf16(as_dtype(w, "bfloat16")[0])
    got = {}
    for isa in ("amx", "avx512"):
        monkeypatch.setenv("FASTDLLM_ISA", isa)
        got[isa] = ops.linear(x, packed, weight_dtype="bfloat16", packed=True)
    bound = 4 * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(as_dtype(w, "bfloat16")[2]).T)
    assert np.all(np.abs(got["amx"] - got["avx512"]) <= bound + 1e-30)
