"""The native Qwen2 forward against the PyTorch reference (tests/reference.py)."""
import numpy as np
import pytest
import torch

import fastdllm_rt
from fastdllm_rt._C import _testing as T
from model_factory import load_weights, make_config, write_model
from reference import RefQwen2, block_causal_mask, block_limit

PAGE = 8


def seq(table, tokens, positions, write_start, n_kv=None, kv_limit=None, rows=None):
    """One sequence of a forward: tokens at positions, written from slot
    write_start, seeing n_kv keys (or per-query kv_limit)."""
    n = len(tokens)
    if kv_limit is None:
        kv_limit = np.full(n, n_kv if n_kv is not None else write_start + n, np.int32)
    d = dict(tokens=np.asarray(tokens, np.int32), positions=np.asarray(positions, np.int32),
             pages=list(table.pages), write_offset=write_start, kv_limit=np.asarray(kv_limit, np.int32))
    if rows is not None:
        d["rows"] = np.asarray(rows, np.int32)
    return d


def run_forward(model, pool, table, tokens, positions, write_start, n_kv, kv_limit=None, rows=None, output="logits",
                **kw):
    return T.forward(model, pool, [seq(table, tokens, positions, write_start, n_kv, kv_limit, rows)], output, **kw)


def fresh_table(model, n_tokens, pages=8, kv_dtype="float32"):
    pool = T.make_pool(model, PAGE, pages, kv_dtype)
    table = T.PageTable(pool)
    table.reserve_tokens(n_tokens)
    return pool, table


def max_rel_err(out, ref):
    ref = ref.float().numpy()
    return float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module", params=["untied", "tied"])
def fp32_model(request, tmp_path_factory):
    cfg = make_config(tie_word_embeddings=request.param == "tied")
    path = write_model(str(tmp_path_factory.mktemp("m")), cfg, seed=3)
    return cfg, fastdllm_rt.load_model(path), RefQwen2(cfg, load_weights(path))


@pytest.mark.parametrize("length", [1, 7, 17, 33])
def test_prefill_logits_match_reference(fp32_model, length):
    cfg, model, ref = fp32_model
    rng = np.random.default_rng(length)
    tokens = rng.integers(0, cfg["vocab_size"], length)
    pool, table = fresh_table(model, length, pages=16)
    mask = block_causal_mask(0, length, PAGE)
    out = run_forward(model, pool, table, tokens, np.arange(length), 0, length, block_limit(0, length, PAGE))
    ref_logits, _ = ref.forward(tokens, np.arange(length), mask=mask)
    # fp32 weights, fp32 compute on both sides: only summation order differs.
    assert max_rel_err(out, ref_logits) <= 1e-4


def test_cached_prefix_then_block(fp32_model):
    """Commit 16 prompt tokens to pages, then run a 12-token block over that cache
    (the block written into a third page), as the decoder does."""
    cfg, model, ref = fp32_model
    rng = np.random.default_rng(7)
    prompt, block = rng.integers(0, cfg["vocab_size"], 16), rng.integers(0, cfg["vocab_size"], 12)
    pool, table = fresh_table(model, 16 + 12, pages=16)
    run_forward(model, pool, table, prompt, np.arange(16), 0, 16, block_limit(0, 16, PAGE), rows=[])
    _, past = ref.forward(prompt, np.arange(16), mask=block_causal_mask(0, 16, PAGE))
    mask = block_causal_mask(16, 12, 32)  # the bs=32 mask of a denoising forward
    out = run_forward(model, pool, table, block, np.arange(16, 28), 16, 28, block_limit(16, 12, 32))
    ref_logits, _ = ref.forward(block, np.arange(16, 28), past=past, mask=mask)
    assert max_rel_err(out, ref_logits) <= 1e-4


def test_sub_block_overwrites_part_of_block_cache(fp32_model):
    """The block-cache path (fast_dllm_v2.md 4.1): a full block's K/V are cached,
    then a sub-block's fresh K/V overwrite rows [s, s+S) in place and its queries
    see the prefix and all B block entries, unmasked."""
    cfg, model, ref = fp32_model
    rng = np.random.default_rng(8)
    B, S, s, c = 16, 4, 8, 16
    prompt = rng.integers(0, cfg["vocab_size"], c)
    block = rng.integers(0, cfg["vocab_size"], B)
    sub = rng.integers(0, cfg["vocab_size"], S)
    pool = T.make_pool(model, B, 8)
    table = T.PageTable(pool)
    table.reserve_tokens(c + B)
    run_forward(model, pool, table, prompt, np.arange(c), 0, c, rows=[])
    run_forward(model, pool, table, block, np.arange(c, c + B), c, c + B, rows=[])
    out = run_forward(model, pool, table, sub, np.arange(c + s, c + s + S), c + s, c + B)
    _, past = ref.forward(prompt, np.arange(c))
    _, blk = ref.forward(block, np.arange(c, c + B), past=past)
    ref_logits, _ = ref.forward(sub, np.arange(c + s, c + s + S), past=past, block_cache=blk, replace=s)
    assert max_rel_err(out, ref_logits) <= 1e-4


def test_logit_rows_select_positions(fp32_model):
    cfg, model, _ = fp32_model
    tokens = np.arange(11) % cfg["vocab_size"]
    pool, table = fresh_table(model, 11)
    full = run_forward(model, pool, table, tokens, np.arange(11), 0, 11)
    part = run_forward(model, pool, table, tokens, np.arange(11), 0, 11, rows=[10, 3])
    np.testing.assert_allclose(part, full[[10, 3]], rtol=1e-6, atol=1e-6)


def test_forward_top2_is_the_reduction_of_the_logits(fp32_model):
    """Greedy decoding's forward (lm_head fused with the top-2 reduction) picks
    what argmax/softmax over the full logits pick."""
    cfg, model, _ = fp32_model
    tokens = np.arange(13) % cfg["vocab_size"]
    pool, table = fresh_table(model, 13)
    rows = np.array([12, 0, 5], np.int32)
    logits = run_forward(model, pool, table, tokens, np.arange(13), 0, 13, rows=rows)
    idx, prob = run_forward(model, pool, table, tokens, np.arange(13), 0, 13, rows=rows, output="top2")
    p = torch.softmax(torch.from_numpy(logits).double(), -1)
    top = p.topk(2, -1)
    np.testing.assert_array_equal(idx, top.indices.numpy())
    np.testing.assert_allclose(prob[:, :2], top.values.numpy(), rtol=1e-5)
    entropy = -(p * p.log()).sum(-1).numpy()
    np.testing.assert_allclose(prob[:, 2], entropy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prob[:, 3], 1 - top.values[:, 0].numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("top_p,top_k", [(0.9, 0), (1.0, 7), (0.999, 0)])
def test_forward_candidates_are_the_reduction_of_the_logits(fp32_model, top_p, top_k):
    """Sampling's forward (lm_head, then ops.sampling_candidates on the device)
    brings to the host what the op computes from the full logits."""
    cfg, model, _ = fp32_model
    tokens = np.arange(13, dtype=np.int32) % cfg["vocab_size"]
    pool, table = fresh_table(model, 13)
    rows = np.array([12, 0, 5, 5], np.int32)
    logits = run_forward(model, pool, table, tokens, np.arange(13), 0, 13, rows=rows)
    kw = dict(temperature=0.7, top_p=top_p, top_k=top_k, exclude=3)
    stats, count, cand = run_forward(model, pool, table, tokens, np.arange(13), 0, 13, rows=rows,
                                     output="candidates", **kw)
    want_stats, want_count, want_cand = T.ops.sampling_candidates(logits, **kw)
    np.testing.assert_array_equal(stats, want_stats)
    np.testing.assert_array_equal(count, want_count)
    for r in range(len(rows)):
        got = sorted(map(tuple, cand[r, :count[r]].tolist()))
        assert got == sorted(map(tuple, want_cand[r, :count[r]].tolist()))


# intermediate 136: gate/up GEMM then SiLU*mul; 144 (a multiple of 16): gate and up
# panels interleaved at load, SiLU*mul in the GEMM epilogue.
@pytest.fixture(scope="module", params=[136, 144], ids=["mlp_two_step", "mlp_fused"])
def bf16_model(request, tmp_path_factory):
    cfg = make_config(tie_word_embeddings=True, intermediate_size=request.param)
    path = write_model(str(tmp_path_factory.mktemp("bf16")), cfg, dtype=torch.bfloat16, shards=3, seed=5)
    return cfg, path


def test_bf16_weights(bf16_model, isa):
    cfg, path = bf16_model
    model = fastdllm_rt.load_model(path)
    assert model.dtype == "bfloat16"
    w = load_weights(path)
    tokens = np.random.default_rng(0).integers(0, cfg["vocab_size"], 21)
    pool, table = fresh_table(model, 21)
    mask = block_causal_mask(0, 21, PAGE)
    out = run_forward(model, pool, table, tokens, np.arange(21), 0, 21, block_limit(0, 21, PAGE))
    exact, _ = RefQwen2(cfg, {k: v.float() for k, v in w.items()}).forward(tokens, np.arange(21), mask=mask)
    if isa == "avx2":
        # AVX2 upcasts the bf16 weights exactly and computes in fp32: against an fp32
        # reference of the same bf16-rounded weights only summation order differs.
        assert max_rel_err(out, exact) <= 1e-4
    else:
        # AVX-512 BF16 (vdpbf16ps) also rounds each matmul's activations to bf16
        # (relative step 2^-8), as PyTorch's bf16 matmul does: ~0.5% of the logit
        # scale measured here, bounded like the bf16 reference below.
        assert max_rel_err(out, exact) <= 2e-2
    # Against HF semantics in bf16: every activation is rounded to 8 mantissa bits
    # (relative step 2^-8 = 0.4%) after each op, a dozen roundings per layer feed
    # the residual stream, so the bf16 reference itself is off by about 1% of the
    # logit scale (0.7% measured on this model); 2% bounds that noise.
    hf_bf16, _ = RefQwen2(cfg, w, torch.bfloat16).forward(tokens, np.arange(21), mask=mask)
    assert max_rel_err(out, hf_bf16) <= 2e-2
    agree = (out.argmax(-1) == hf_bf16.float().numpy().argmax(-1)).mean()
    assert agree >= 0.9


def test_dtype_override_upcasts(bf16_model, isa):
    cfg, path = bf16_model
    m32 = fastdllm_rt.load_model(path, dtype="float32")
    m16 = fastdllm_rt.load_model(path)
    assert m32.dtype == "float32"
    tokens = np.arange(5)
    outs = []
    for m in (m32, m16):
        pool, t = fresh_table(m, 5)
        outs.append(run_forward(m, pool, t, tokens, np.arange(5), 0, 5))
    # Same bf16 values either way; on AVX-512 BF16 the bf16 model also rounds its
    # matmul activations (see test_bf16_weights).
    tol = 1e-5 if isa == "avx2" else 2e-2
    assert np.abs(outs[0] - outs[1]).max() <= tol * np.abs(outs[0]).max()


def test_fp16_weights(tmp_path):
    """fp16 checkpoints run through the row-major kernels (F16C upcast, fp32 math)."""
    cfg = make_config()
    path = write_model(str(tmp_path / "f16"), cfg, dtype=torch.float16, seed=9)
    model = fastdllm_rt.load_model(path)
    assert model.dtype == "float16"
    tokens = np.random.default_rng(1).integers(0, cfg["vocab_size"], 13)
    pool, table = fresh_table(model, 13)
    mask = block_causal_mask(0, 13, PAGE)
    out = run_forward(model, pool, table, tokens, np.arange(13), 0, 13, block_limit(0, 13, PAGE))
    exact, _ = RefQwen2(cfg, {k: v.float() for k, v in load_weights(path).items()}).forward(
        tokens, np.arange(13), mask=mask)
    assert max_rel_err(out, exact) <= 1e-4


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def any_model(request, tmp_path_factory):
    cfg = make_config(intermediate_size=144)
    dt = torch.float32 if request.param == "float32" else torch.bfloat16
    path = write_model(str(tmp_path_factory.mktemp("any")), cfg, dtype=dt, seed=4)
    return cfg, fastdllm_rt.load_model(path)


@pytest.mark.parametrize("kv_dtype", ["float32", "bfloat16"])
def test_batched_rows_equal_each_sequence_alone(any_model, isa, kv_dtype):
    """One forward over a ragged batch (a prefill, a whole block over a cached
    prefix, a sub-block inside its block cache; different lengths, own pages)
    gives every sequence bit for bit what its forward alone gives: the kernels
    never mix rows of different sequences, so batching changes no decision."""
    cfg, model = any_model
    rng = np.random.default_rng(11)
    V = cfg["vocab_size"]
    pool = T.make_pool(model, PAGE, 64, kv_dtype)

    def setup():
        """Three sequences' caches: 0 empty, 1 with a 24-token prefix, 2 with 16 + a 16-token block."""
        tables = [T.PageTable(pool) for _ in range(3)]
        tables[0].reserve_tokens(21)
        tables[1].reserve_tokens(24 + 32)
        tables[2].reserve_tokens(32)
        T.forward(model, pool, [seq(tables[1], rng_pref[1], np.arange(24), 0, kv_limit=block_limit(0, 24, PAGE),
                                    rows=[]),
                                seq(tables[2], rng_pref[2], np.arange(32), 0, kv_limit=block_limit(0, 32, 16),
                                    rows=[])])
        return tables

    rng_pref = {1: rng.integers(0, V, 24), 2: rng.integers(0, V, 32)}
    toks = [rng.integers(0, V, 21), rng.integers(0, V, 32), rng.integers(0, V, 4)]

    def seqs(tables):
        return [seq(tables[0], toks[0], np.arange(21), 0, kv_limit=block_limit(0, 21, PAGE), rows=[20, 3]),
                seq(tables[1], toks[1], np.arange(24, 56), 24, kv_limit=block_limit(24, 32, 32), rows=[0, 5, 31]),
                seq(tables[2], toks[2], np.arange(24, 28), 24, n_kv=32, rows=[1, 2, 3])]

    for output in ("logits", "top2"):
        tables = setup()
        batched = T.forward(model, pool, seqs(tables), output)
        alone = []
        for one in seqs(setup()):
            alone.append(T.forward(model, pool, [one], output))
        if output == "logits":
            np.testing.assert_array_equal(batched, np.concatenate(alone))
        else:
            for b, a in zip(batched, zip(*alone)):
                np.testing.assert_array_equal(b, np.concatenate(a))


def test_forward_batch_errors_name_the_problem(fp32_model):
    cfg, model, _ = fp32_model
    pool, table = fresh_table(model, 16)
    with pytest.raises(ValueError, match=r"forward: token id 9999 at index 1 is outside the vocabulary"):
        run_forward(model, pool, table, [1, 9999], [0, 1], 0, 2)
    with pytest.raises(ValueError, match=r"forward: sequence 0 writes slots \[10, 17\) outside the 16"):
        run_forward(model, pool, table, list(range(7)), np.arange(7), 10, 17)
    with pytest.raises(ValueError, match=r"forward: token 0 sees 99 keys, outside the 16 slots"):
        run_forward(model, pool, table, [1], [0], 0, 99)
    with pytest.raises(ValueError, match=r"forward: logit row 5 is outside \[0, 2\)"):
        run_forward(model, pool, table, [1, 2], [0, 1], 0, 2, rows=[5])
    assert run_forward(model, pool, table, [1, 2], [0, 1], 0, 2).shape == (2, cfg["vocab_size"])
