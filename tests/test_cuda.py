"""The CUDA backend against the CPU backend (the tested reference): every op on
odd shapes and on Qwen2.5-1.5B / 7B shapes, the forward, and the engine's
token-exact decoding. Marked `cuda`: skipped (with the reason) without a device.
Run on a GPU machine with:  python -m pytest -q -m cuda tests"""
import numpy as np
import pytest
import torch

import fastdllm_rt
from fastdllm_rt._C import _testing as T
from model_factory import load_weights, make_config, write_model
from ref_generate import ref_generate
from reference import RefQwen2, block_causal_mask, block_limit
from test_sampling import reference as sampling_reference

pytestmark = pytest.mark.cuda
ops = T.ops
RNG = np.random.default_rng(7)
ROWS = [1, 7, 17, 33, 127]


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def bf16(a):
    return torch.from_numpy(a).bfloat16().view(torch.int16).numpy().view(np.uint16)


def as_weight(a, dtype):
    return {"float32": a, "bfloat16": bf16(a), "float16": a.astype(np.float16).view(np.uint16)}[dtype]


@pytest.mark.parametrize("rows", ROWS)
# odd sizes; Qwen2.5-1.5B qkv, gate/up, down; Qwen2.5-7B qkv, gate/up, down
@pytest.mark.parametrize("k,n", [(37, 23), (80, 331), (1536, 2048), (1536, 8960 * 2), (8960, 1536), (3584, 4608),
                                 (3584, 18944 * 2), (18944, 3584)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_linear(rows, k, n, dtype):
    x, w, b, r = randn(rows, k), randn(n, k), randn(n), randn(rows, n)
    wp = as_weight(w, dtype)
    wd = "" if dtype == "float32" else dtype
    cpu = ops.linear(x, wp, bias=b, residual=r, weight_dtype=wd)
    gpu = ops.linear(x, wp, bias=b, residual=r, weight_dtype=wd, device="cuda")
    # bf16 / fp16 with aligned K/N run CUTLASS on activations rounded to the weight
    # type (relative 2^-9 / 2^-11 per input); everything else the exact SIMT kernel.
    tol = {"float32": 1e-5, "bfloat16": 1e-2, "float16": 3e-3}[dtype] if not (k % 8 or n % 8) else 1e-5
    np.testing.assert_allclose(gpu, cpu, rtol=tol, atol=tol * np.sqrt(k))


@pytest.mark.parametrize("rows", ROWS)
def test_elementwise(rows):
    x, w = randn(rows, 1536), randn(1536)
    np.testing.assert_allclose(ops.rms_norm(x, w, 1e-6, device="cuda"), ops.rms_norm(x, w, 1e-6), rtol=1e-5, atol=1e-5)
    gu = randn(rows, 2 * 37)
    np.testing.assert_allclose(ops.silu_mul(gu, device="cuda"), ops.silu_mul(gu), rtol=1e-5, atol=1e-6)
    a, b = randn(rows, 19), randn(rows, 19)
    np.testing.assert_array_equal(ops.add(a, b, device="cuda"), ops.add(a, b))
    table = randn(331, 48)
    ids = RNG.integers(0, 331, rows).astype(np.int32)
    np.testing.assert_array_equal(ops.embedding(table, ids, device="cuda"), ops.embedding(table, ids))
    q = randn(rows, 5, 128)
    pos = RNG.integers(0, 5000, rows).astype(np.int32)
    inv = (1.0 / (1e6 ** (np.arange(0, 128, 2) / 128))).astype(np.float32)
    np.testing.assert_allclose(ops.rope(q, pos, inv, device="cuda"), ops.rope(q, pos, inv), rtol=1e-4, atol=1e-4)
    logits = randn(rows, 151936) * 4
    gi, gp = ops.argmax_prob(logits, device="cuda")
    ci, cp = ops.argmax_prob(logits)
    np.testing.assert_array_equal(gi, ci)
    np.testing.assert_allclose(gp, cp, rtol=1e-5)


@pytest.mark.parametrize("lq,n_kv", [(1, 1), (7, 40), (32, 544), (127, 130)])
@pytest.mark.parametrize("heads,kv_heads,hd", [(12, 2, 128), (28, 4, 128), (4, 2, 32)])
@pytest.mark.parametrize("mode", ["none", "limit"])
@pytest.mark.parametrize("kv_dtype", ["float32", "bfloat16"])
def test_paged_attention(lq, n_kv, heads, kv_heads, hd, mode, kv_dtype):
    pages = (n_kv + 15) // 16
    q, k, v = randn(lq, heads, hd), randn(n_kv, kv_heads, hd), randn(n_kv, kv_heads, hd)
    limit = RNG.integers(1, n_kv + 1, lq).astype(np.int32) if mode == "limit" else None
    out = []
    for device in ("cpu", "cuda"):
        pool = T.PagePool(1, kv_heads, hd, 16, pages + 2, device=device, kv_dtype=kv_dtype)
        table = T.PageTable(pool)
        table.reserve_tokens(n_kv)
        out.append(ops.paged_attention(q, k, v, pool, list(table.pages)[::-1], hd ** -0.5, kv_limit=limit))
    np.testing.assert_allclose(out[1], out[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kv_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("target", [7, 264])
def test_ragged_attention(kv_dtype, target):
    """A ragged batch on the GPU, split as plans::plan_attention says, against the CPU."""
    heads, kv_heads, hd, page = 12, 2, 128, 16
    lens_q, lens_kv = [32, 8, 1, 17], [544, 40, 3, 17]
    res = []
    for device in ("cpu", "cuda"):
        pool = T.PagePool(1, kv_heads, hd, page, 64, device=device, kv_dtype=kv_dtype)
        tables = [T.PageTable(pool) for _ in lens_q]
        for t, n in zip(tables, lens_kv):
            t.reserve_tokens(n)
        kv_indptr = np.cumsum([0] + [len(t.pages) for t in tables]).astype(np.int32)
        kv_indices = np.concatenate([t.pages for t in tables]).astype(np.int32)
        rng = np.random.default_rng(3)
        k = rng.standard_normal((sum(lens_kv), kv_heads, hd)).astype(np.float32)
        v = rng.standard_normal((sum(lens_kv), kv_heads, hd)).astype(np.float32)
        ops.kv_write(pool, k, v, np.cumsum([0] + lens_kv).astype(np.int32), kv_indptr, kv_indices,
                     np.zeros(len(lens_q), np.int32))
        q = rng.standard_normal((sum(lens_q), heads, hd)).astype(np.float32)
        lim = np.concatenate([rng.integers(0, nk + 1, nq) for nq, nk in zip(lens_q, lens_kv)]).astype(np.int32)
        res.append(ops.attention(q, pool, lim, np.cumsum([0] + lens_q).astype(np.int32), kv_indptr, kv_indices,
                                 hd ** -0.5, target_ctas=target))
    np.testing.assert_allclose(res[1], res[0], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def fp32_dir(tmp_path_factory):
    cfg = make_config(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      intermediate_size=256, vocab_size=512, mask_token_id=511)
    return write_model(str(tmp_path_factory.mktemp("cuda_fp32")), cfg, seed=4)


@pytest.mark.parametrize("bs", [(32, 8), (16, 4), (64, 16)])
@pytest.mark.parametrize("block_cache", [False, True])
def test_engine_token_exact_vs_cpu(fp32_dir, bs, block_cache):
    cpu = fastdllm_rt.Engine(fp32_dir)
    gpu = fastdllm_rt.Engine(fp32_dir, device="cuda")
    for plen in (5, bs[0], 40):
        prompt = RNG.integers(0, 500, plen).tolist()
        kw = dict(max_new_tokens=96, block_size=bs[0], sub_block_size=bs[1], threshold=0.9,
                  use_block_cache=block_cache, stop_token_id=2)
        a, b = cpu.generate_ids(prompt, **kw), gpu.generate_ids(prompt, **kw)
        assert b.token_ids == a.token_ids and b.num_forwards == a.num_forwards


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("kv_dtype", ["float32", "bfloat16"])
def test_qkv_rope_append(rows, kv_dtype):
    heads, kv_heads, hd = 12, 2, 128
    qkv = randn(rows, (heads + 2 * kv_heads) * hd)
    pos = RNG.integers(0, 3000, rows).astype(np.int32)
    inv = (1.0 / (1e6 ** (np.arange(0, hd, 2) / hd))).astype(np.float32)
    probe = randn(3, heads, hd)
    res = []
    for device in ("cpu", "cuda"):
        pool = T.PagePool(1, kv_heads, hd, 16, 20, device=device, kv_dtype=kv_dtype)
        table = T.PageTable(pool)
        table.reserve_tokens(rows)
        pages = np.array(list(table.pages)[::-1], np.int32)
        ip = np.array([0, len(pages)], np.int32)
        q = ops.qkv_rope_append(qkv, inv, heads, pool, pos, np.array([0, rows], np.int32), ip, pages,
                                np.zeros(1, np.int32))
        att = ops.attention(probe, pool, np.full(3, rows, np.int32), np.array([0, 3], np.int32), ip, pages, 0.1)
        res.append((q, att))
    np.testing.assert_allclose(res[1][0], res[0][0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res[1][1], res[0][1], rtol=1e-4, atol=2e-3 if kv_dtype == "bfloat16" else 1e-4)


@pytest.mark.parametrize("rows", [1, 8, 33])
@pytest.mark.parametrize("k,vocab", [(40, 23), (1536, 151936), (3584, 152064)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_lm_head_top2(rows, k, vocab, dtype):
    x, w = randn(rows, k), randn(vocab, k) * 0.05
    wp = as_weight(w, dtype)
    wd = "" if dtype == "float32" else dtype
    ci, cp = ops.lm_head_top2(x, wp, weight_dtype=wd)
    gi, gp = ops.lm_head_top2(x, wp, weight_dtype=wd, device="cuda")
    if dtype == "float32":  # the same fp32 logits up to summation order: same choice
        np.testing.assert_array_equal(gi, ci)
        np.testing.assert_allclose(gp[:, :2], cp[:, :2], rtol=1e-4)
        np.testing.assert_allclose(gp[:, 2], cp[:, 2], rtol=1e-4, atol=1e-4)  # the entropy
        np.testing.assert_allclose(gp[:, 3], cp[:, 3], rtol=1e-3, atol=1e-12)  # 1 - p1
    else:  # activations rounded to the weight type on the GPU: its choice is a top choice of the CPU logits
        logits = ops.linear(x, wp, weight_dtype=wd)
        chosen = np.take_along_axis(logits, gi[:, :1].astype(np.int64), 1)[:, 0]
        np.testing.assert_allclose(chosen, logits.max(1), rtol=0, atol=2e-2 * np.abs(logits).max())
        np.testing.assert_allclose(gp[:, 0], cp[:, 0], rtol=5e-2)


def test_gather_rows():
    x = randn(17, 1536)
    rows = np.array([16, 0, 3, 3], np.int32)
    np.testing.assert_array_equal(ops.gather_rows(x, rows, device="cuda"), x[rows])


def test_cuda_graphs_replay_token_exact(fp32_dir, monkeypatch):
    """Greedy decoding replays captured forwards, and the tokens and forward
    counts equal the CPU's and those of the same engine without graphs."""
    kw = dict(max_new_tokens=96, block_size=32, sub_block_size=8, threshold=0.9, use_block_cache=True,
              stop_token_id=2)
    prompt = RNG.integers(0, 500, 21).tolist()
    cpu = fastdllm_rt.Engine(fp32_dir).generate_ids(prompt, **kw)
    gpu = fastdllm_rt.Engine(fp32_dir, device="cuda")
    with_graphs = gpu.generate_ids(prompt, **kw)
    runs = gpu.model.graph_runs
    assert runs["replayed"] > 0 and runs["captured"] > 0, runs
    monkeypatch.setenv("FASTDLLM_CUDA_GRAPHS", "0")
    plain = fastdllm_rt.Engine(fp32_dir, device="cuda")
    without = plain.generate_ids(prompt, **kw)
    assert plain.model.graph_runs["captured"] == 0 and plain.model.graph_runs["replayed"] == 0
    for r in (with_graphs, without):
        assert r.token_ids == cpu.token_ids and r.num_forwards == cpu.num_forwards


def test_batched_engine_on_the_gpu(fp32_dir):
    """Many requests with different settings share forwards on the GPU (graphs
    keyed by token and sequence buckets) and each gets the CPU engine's result."""
    cfgs = [dict(block_size=32, sub_block_size=8, threshold=0.9, use_block_cache=True),
            dict(block_size=16, sub_block_size=4, threshold=0.7, use_block_cache=False),
            dict(block_size=64, sub_block_size=16, threshold=1.0, use_block_cache=True),
            dict(block_size=32, sub_block_size=32, threshold=0.5, use_block_cache=False)]
    prompts = [RNG.integers(0, 500, n).tolist() for n in (7, 40, 64, 100, 13, 33)]
    cpu = fastdllm_rt.Engine(fp32_dir)
    gpu = fastdllm_rt.Engine(fp32_dir, device="cuda")
    import threading
    out = {}

    def run(i):
        out[i] = gpu.generate_ids(prompts[i], max_new_tokens=96, stop_token_id=2, **cfgs[i % 4])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    st = gpu.stats()
    assert st["model_forwards"] < st["sequence_forwards"] and st["pages_in_use"] == 0
    assert gpu.model.graph_runs["replayed"] > 0
    for i, p in enumerate(prompts):
        want = cpu.generate_ids(p, max_new_tokens=96, stop_token_id=2, **cfgs[i % 4])
        assert out[i].token_ids == want.token_ids and out[i].num_forwards == want.num_forwards, i


def test_plan_buckets_replayable_forwards(fp32_dir):
    model = fastdllm_rt.load_model(fp32_dir, device="cuda")
    pool = T.make_pool(model, 16, 32)
    t = [T.PageTable(pool) for _ in range(3)]
    for x in t:
        x.reserve_tokens(64)
    seqs = [dict(tokens=np.arange(n, dtype=np.int32), pages=list(x.pages), write_offset=32) for n, x in
            zip((32, 8, 1), t)]
    p = T.describe_plan(model, pool, seqs)
    # 41 tokens in 3 sequences run as the 48-token, 4-sequence bucket (the padding
    # sequence takes 7 tokens); 41 greedy rows as 48; every query tile gets work
    assert p["replayable"] and (p["tokens"], p["seqs"], p["greedy_rows"]) == (48, 4, 48)
    assert p["attention_work"] >= 8 + 2 + 1 + 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_engine_graphs_match_eager(tmp_path, monkeypatch, dtype):
    """bf16 / fp16 weights take the CUTLASS GEMMs of their type (small-M stream-K
    for decoding); replayed graphs give the same tokens as eager launches."""
    cfg = make_config(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                      intermediate_size=512, vocab_size=1024, mask_token_id=1023)
    path = write_model(str(tmp_path), cfg, dtype=dtype, seed=9)
    prompt = RNG.integers(0, 1000, 37).tolist()
    kw = dict(max_new_tokens=64, block_size=32, sub_block_size=8, threshold=0.9, use_block_cache=True)
    a = fastdllm_rt.Engine(path, device="cuda").generate_ids(prompt, **kw)
    monkeypatch.setenv("FASTDLLM_CUDA_GRAPHS", "0")
    b = fastdllm_rt.Engine(path, device="cuda").generate_ids(prompt, **kw)
    assert a.token_ids == b.token_ids and a.num_forwards == b.num_forwards


@pytest.mark.parametrize("rows", [1, 8, 33, 127])
def test_bf16_operands(rows):
    """Norm and SiLU*mul write the GEMM's bf16 operand on the GPU as on the CPU,
    and the CUTLASS GEMMs take it without a conversion pass."""
    x, w, gu = randn(rows, 1536), randn(1536), randn(rows, 2 * 8960)
    for dev_out, cpu_out in (
            (ops.rms_norm(x, w, 1e-6, out_dtype="bfloat16", device="cuda"), ops.rms_norm(x, w, 1e-6, out_dtype="bfloat16")),
            (ops.silu_mul(gu, out_dtype="bfloat16", device="cuda"), ops.silu_mul(gu, out_dtype="bfloat16"))):
        a = torch.from_numpy(dev_out.view(np.int16)).view(torch.bfloat16).float().numpy()
        b = torch.from_numpy(cpu_out.view(np.int16)).view(torch.bfloat16).float().numpy()
        np.testing.assert_allclose(a, b, rtol=8e-3, atol=1e-6)  # one bf16 ulp where fp32 rounding differs
    pools = [T.PagePool(1, 2, 128, 16, 40, device=dev) for dev in ("cpu", "cuda")]
    q, k, v = randn(rows, 12, 128), randn(544, 2, 128), randn(544, 2, 128)
    att = []
    for pool in pools:
        table = T.PageTable(pool)
        table.reserve_tokens(544)
        att.append(ops.paged_attention(q, k, v, pool, list(table.pages), 0.088, out_dtype="bfloat16"))
    a, b = (torch.from_numpy(t.view(np.int16)).view(torch.bfloat16).float().numpy() for t in att)
    np.testing.assert_allclose(a, b, rtol=8e-3, atol=1e-5)
    h = ops.rms_norm(x, w, 1e-6, out_dtype="bfloat16")
    wl, r = bf16(randn(2048, 1536)), randn(rows, 2048)
    gpu = ops.linear(h, wl, residual=r, weight_dtype="bfloat16", x_dtype="bfloat16", device="cuda")
    cpu = ops.linear(h, wl, residual=r, weight_dtype="bfloat16", x_dtype="bfloat16")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3 * np.sqrt(1536))


@pytest.mark.parametrize("rows", [1, 37])
def test_f16_operands(rows):
    """fp16 models: norm, SiLU*mul and attention write the fp16 GEMM operand on
    the GPU (the fp32 result rounded to nearest), which the fp16 GEMMs take as is."""
    def f16(a):
        return a.view(np.float16).astype(np.float32)

    x, w, gu = randn(rows, 1536), randn(1536), randn(rows, 2 * 8960)
    for dev_out, cpu_out in ((ops.rms_norm(x, w, 1e-6, out_dtype="float16", device="cuda"), ops.rms_norm(x, w, 1e-6)),
                             (ops.silu_mul(gu, out_dtype="float16", device="cuda"), ops.silu_mul(gu))):
        np.testing.assert_allclose(f16(dev_out), cpu_out.astype(np.float16).astype(np.float32), rtol=1e-3, atol=1e-6)
    pool = T.PagePool(1, 2, 128, 16, 40, device="cuda")
    table = T.PageTable(pool)
    table.reserve_tokens(544)
    q, k, v = randn(rows, 12, 128), randn(544, 2, 128), randn(544, 2, 128)
    a = ops.paged_attention(q, k, v, pool, list(table.pages), 0.088, out_dtype="float16")
    b = ops.paged_attention(q, k, v, pool, list(table.pages), 0.088)
    np.testing.assert_allclose(f16(a).reshape(rows, -1), b.reshape(rows, -1).astype(np.float16).astype(np.float32), rtol=2e-3, atol=1e-5)
    h = ops.rms_norm(x, w, 1e-6, out_dtype="float16", device="cuda")
    wl, r = randn(2048, 1536).astype(np.float16), randn(rows, 2048)
    gpu = ops.linear(h, wl, residual=r, weight_dtype="float16", x_dtype="float16", device="cuda")
    ref = f16(h) @ wl.astype(np.float32).T + r
    np.testing.assert_allclose(gpu, ref, rtol=1e-3, atol=1e-3 * np.sqrt(1536))


def test_sampling_engine_on_the_device(fp32_dir):
    """Sampling forwards bring only the candidates down; decoding is seeded, never
    draws the mask token, and replays its graphs (the sampling options are part
    of the graph key). With fp32 weights the logits agree with the CPU's to ~1e-6
    relative, so a draw differs only if the uniform lands within that of a
    cumulative probability: the same seed gives the CPU's tokens."""
    kw = dict(max_new_tokens=64, block_size=32, sub_block_size=8, threshold=0.9, use_block_cache=True,
              temperature=0.8, top_p=0.9, top_k=40)
    prompt = RNG.integers(0, 500, 19).tolist()
    gpu = fastdllm_rt.Engine(fp32_dir, device="cuda")
    a = gpu.generate_ids(prompt, seed=5, **kw)
    b = gpu.generate_ids(prompt, seed=5, **kw)
    c = fastdllm_rt.Engine(fp32_dir).generate_ids(prompt, seed=5, **kw)
    assert a.token_ids == b.token_ids and 511 not in a.token_ids
    assert gpu.model.graph_runs["replayed"] > 0
    assert a.token_ids == c.token_ids and a.num_forwards == c.num_forwards


@pytest.mark.parametrize("bs", [(32, 8), (64, 16)])
@pytest.mark.parametrize("block_cache", [False, True])
def test_engine_token_exact_vs_reference(fp32_dir, bs, block_cache):
    """The CUDA engine against the PyTorch reference of the spec's algorithm
    directly (ids and forward counts), not only through the CPU engine."""
    cfg = make_config(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      intermediate_size=256, vocab_size=512, mask_token_id=511)
    ref = RefQwen2(cfg, load_weights(fp32_dir))
    gpu = fastdllm_rt.Engine(fp32_dir, device="cuda")
    for plen in (7, bs[0] + 3):
        prompt = RNG.integers(0, 500, plen).tolist()
        res = gpu.generate_ids(prompt, max_new_tokens=64, block_size=bs[0], sub_block_size=bs[1], threshold=0.9,
                               use_block_cache=block_cache, stop_token_id=2, length_rule="upstream")
        ids, forwards = ref_generate(ref, prompt, 64, block_size=bs[0], small_block_size=bs[1], threshold=0.9,
                                     use_block_cache=block_cache, mask_id=511, stop_token=2)
        assert res.token_ids == ids and res.num_forwards == forwards


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_forward_agrees_with_reference(tmp_path, dtype):
    """A bf16 / fp16 forward on the GPU against the PyTorch reference. The GPU
    rounds every GEMM's activations to the weight type (as PyTorch's bf16/fp16
    matmul does; relative step 2^-8 / 2^-11) and keeps the residual stream in
    fp32. Against an fp32 reference of the same rounded weights that is the only
    difference: ~0.5% of the logit scale in bf16 (what the AVX-512 BF16 CPU path
    shows on the same kind of model, tests/test_forward.py), 8x less in fp16;
    2% / 0.5% bound it. The HF-semantics bf16 reference rounds after every op
    and is itself ~1% off, hence the same 2% bound and argmax agreement."""
    cfg = make_config(tie_word_embeddings=True, intermediate_size=144, hidden_size=128, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=32, vocab_size=512, mask_token_id=511)
    path = write_model(str(tmp_path), cfg, dtype=dtype, seed=5)
    model = fastdllm_rt.load_model(path, device="cuda")
    w = load_weights(path)
    tokens = np.random.default_rng(0).integers(0, cfg["vocab_size"], 21)
    pool = T.make_pool(model, 8, 8)
    table = T.PageTable(pool)
    table.reserve_tokens(21)
    mask = block_causal_mask(0, 21, 8)
    limit = block_limit(0, 21, 8)
    out = T.forward(model, pool, [dict(tokens=tokens.astype(np.int32), pages=list(table.pages), kv_limit=limit)])
    exact, _ = RefQwen2(cfg, {k: v.float() for k, v in w.items()}).forward(tokens, np.arange(21), mask=mask)
    exact = exact.float().numpy()
    bound = 2e-2 if dtype == torch.bfloat16 else 5e-3
    assert np.abs(out - exact).max() <= bound * np.abs(exact).max()
    half, _ = RefQwen2(cfg, w, dtype).forward(tokens, np.arange(21), mask=mask)
    half = half.float().numpy()
    assert np.abs(out - half).max() <= 2e-2 * np.abs(half).max()
    assert (out.argmax(-1) == half.argmax(-1)).mean() >= 0.9


def test_forward_candidates_come_down_whole(tmp_path):
    """Sampling's forward on the GPU: rows with more candidates than come down
    in the first copy (1024) arrive whole, and every row holds the nucleus of
    the GPU's own logits (the GPU compacts in any
    order, and its cut may fall a bin away from the CPU's where fp32 bin masses
    round differently, so the candidate sets themselves may differ)."""
    cfg = make_config(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      intermediate_size=256, vocab_size=4096, mask_token_id=4095)
    model = fastdllm_rt.load_model(write_model(str(tmp_path), cfg, seed=2), device="cuda")
    pool = T.make_pool(model, 16, 4)
    table = T.PageTable(pool)
    table.reserve_tokens(32)
    tokens = RNG.integers(0, 4000, 32).astype(np.int32)
    rows = np.array([31, 0, 7], np.int32)
    one = [dict(tokens=tokens, pages=list(table.pages), rows=rows)]
    logits = T.forward(model, pool, one)
    for top_p in (0.5, 0.999):
        kw = dict(temperature=1.0, top_p=top_p, top_k=0, exclude=4095)
        stats, count, cand = T.forward(model, pool, one, "candidates", **kw)
        want_stats = ops.sampling_candidates(logits, **kw)[0]
        np.testing.assert_allclose(stats, want_stats, rtol=1e-5)
        if top_p > 0.99:
            assert count.min() > 1024  # random weights: a flat row, the second copy is exercised
        for r in range(len(rows)):
            got = {int(t) for t in cand[r, :count[r], 0]}
            assert len(got) == count[r]
            np.testing.assert_array_equal(cand[r, :count[r], 1].view(np.float32), logits[r, cand[r, :count[r], 0]])
            nucleus, _ = sampling_reference(logits[r], 1.0, top_p, 0, exclude=4095)
            assert set(nucleus) <= got


# ---- integer weights (issue: low-bit weights) ----
def _int_codes(n, k, bits, group, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 1 << bits, (n, k)).astype(np.uint8)
    s = (rng.random((n, k // group)) * 0.02 + 0.001).astype(np.float32)
    z = rng.integers(0, 1 << bits, (n, k // group)).astype(np.float32)
    w = (q.astype(np.float64) - np.repeat(z, group, 1)) * np.repeat(s, group, 1)
    return q, s, z, w


@pytest.mark.parametrize("rows", [1, 3, 8, 17, 32, 64, 65])
@pytest.mark.parametrize("fmt,bits", [("int8", 8), ("int4", 4)])
@pytest.mark.parametrize("n,k,group", [(24, 64, 64), (331, 256, 128), (2048, 1536, 128), (1536, 8960, 128)])
def test_linear_int_matches_dequantized(rows, fmt, bits, n, k, group):
    q, s, z, w = _int_codes(n, k, bits, group)
    x, b, r = randn(rows, k), randn(n), randn(rows, n)
    perm = np.random.default_rng(1).permutation(k).astype(np.int32)
    wp = np.empty_like(w)
    wp[:, perm] = w
    got = ops.linear_int(x, q, s, z, format=fmt, group_size=group, bias=b, residual=r, device="cuda")
    if group % 64 == 0 and k % 64 == 0 and n % 4 == 0:
        # the tensor-core path (gemm_mixed_sm90.cuh, W4A16 / W8A16): bf16 activations, weights
        # dequantized in bf16 as s * q + (-s * z), fp32 accumulation
        bf = torch.bfloat16
        sq = torch.from_numpy(np.repeat(s, group, 1)).to(bf) * torch.from_numpy(q.astype(np.float32)).to(bf)
        wq = (sq + torch.from_numpy(np.repeat(-s * z, group, 1)).to(bf)).float().numpy()
        xb = torch.from_numpy(x).to(bf).float().numpy()
        # (one bf16 rounding of s*q + zero or two: within the tolerance; a layout error is O(1))
        np.testing.assert_allclose(got, xb.astype(np.float64) @ wq.T.astype(np.float64) + b + r, rtol=1e-2,
                                   atol=2e-3 * np.sqrt(k))
    else:
        np.testing.assert_allclose(got, x.astype(np.float64) @ w.T + b + r, rtol=1e-4, atol=1e-3)
    got = ops.linear_int(x, q, s, z, perm=perm, format=fmt, group_size=group, device="cuda")  # act-order: SIMT
    np.testing.assert_allclose(got, x.astype(np.float64) @ wp.T, rtol=1e-4, atol=1e-3)


def test_quantized_engine_on_the_gpu_matches_the_cpu(tmp_path):
    """A GPTQ int4 checkpoint on the GPU (tensor-core W4A16) tracks the CPU's fp32 (AVX2) path."""
    import os
    from test_quant_model import QCFG, write_quantized
    write_quantized(str(tmp_path / "q"), QCFG, method="gptq", bits=4, group=64)
    os.environ["FASTDLLM_ISA"] = "avx2"
    try:
        with fastdllm_rt.Engine(str(tmp_path / "q"), device="cpu", kv_dtype="float32") as c, \
                fastdllm_rt.Engine(str(tmp_path / "q"), device="cuda", kv_dtype="float32") as g:
            ids = list(range(3, 60))
            lg, lc = g.logits(ids), c.logits(ids)
            # group 64 without act-order takes the tensor-core W4A16 path: bf16 activations and
            # bf16 dequantization on the GPU against fp32 on the CPU
            assert np.linalg.norm(lg - lc) / np.linalg.norm(lc) < 2e-2
            assert (lg.argmax(1) == lc.argmax(1)).mean() > 0.9
    finally:
        del os.environ["FASTDLLM_ISA"]


def _fp8_reference(x, wq, ws, bias=None, residual=None):
    """W8A8 as the GPU computes it: x / (max|row| / 448) rounded to E4M3 (torch's
    saturating float8_e4m3fn conversion), products summed in float64."""
    from fastdllm_rt.quant.layouts import E4M3
    amax = np.abs(x).max(1)
    sx = np.where(amax > 0, amax / np.float32(448), 1).astype(np.float32)
    xq = torch.from_numpy(np.clip(x / sx[:, None], -448, 448)).to(torch.float8_e4m3fn).float().numpy()
    out = (xq.astype(np.float64) * sx[:, None]) @ (E4M3[wq].astype(np.float64) * ws[:, None]).T
    return out + (0 if bias is None else bias) + (0 if residual is None else residual)


@pytest.mark.parametrize("rows", [1, 3, 17, 64, 65, 130])
@pytest.mark.parametrize("n,k", [(24, 64), (336, 256), (1536, 1536), (8960, 1536)])
def test_linear_fp8_matches_the_w8a8_reference(rows, n, k):
    from fastdllm_rt.quant.layouts import float_to_e4m3
    rng = np.random.default_rng(rows + n)
    wq = float_to_e4m3(rng.standard_normal((n, k)) * 30)
    ws = (rng.random(n) * 0.01 + 0.001).astype(np.float32)
    x, b, r = randn(rows, k), randn(n), randn(rows, n)
    x[0, :5] = 0
    got = ops.linear_fp8(x, wq, ws, bias=b, residual=r, device="cuda")
    np.testing.assert_allclose(got, _fp8_reference(x, wq, ws, b, r), rtol=1e-3, atol=1e-3)
    got = ops.linear_fp8(x.astype(np.float32), wq, ws, device="cuda")  # no bias, no residual: C is zeros
    np.testing.assert_allclose(got, _fp8_reference(x, wq, ws), rtol=1e-3, atol=1e-3)


def test_fp8_engine_on_the_gpu_tracks_the_dequantized_cpu_model(tmp_path):
    """An fp8 checkpoint runs W8A8 on the GPU; the CPU runs its dequantized
    weights with fp32 activations. The difference is the activations' E4M3
    rounding: logits within a few percent, the same greedy choice at most rows."""
    from test_quant_model import QCFG, write_fp8
    write_fp8(str(tmp_path / "q"), QCFG, scale_shape="channel")
    with fastdllm_rt.Engine(str(tmp_path / "q"), device="cpu", kv_dtype="float32") as c, \
            fastdllm_rt.Engine(str(tmp_path / "q"), device="cuda", kv_dtype="float32") as g:
        assert g.model.weight_format == "fp8" and c.model.weight_format == "dense"
        ids = list(range(3, 60))
        lc, lg = c.logits(ids), g.logits(ids)
        assert np.linalg.norm(lg - lc) / np.linalg.norm(lc) < 0.05
        assert (lg.argmax(1) == lc.argmax(1)).mean() > 0.9
        res = g.generate_ids(ids[:9], max_new_tokens=32)
        assert len(res.token_ids) > 0


def test_quantize_fp8_at_load(tmp_path):
    from model_factory import make_config, write_model
    path = write_model(str(tmp_path / "m"), make_config(), dtype=torch.bfloat16)
    with fastdllm_rt.Engine(path, device="cuda") as b, fastdllm_rt.Engine(path, device="cuda", quantize="fp8") as q:
        assert q.model.weight_format == "fp8" and q.model.weight_bytes < b.model.weight_bytes
        ids = list(range(3, 40))
        lb, lq = b.logits(ids), q.logits(ids)
        assert (lb.argmax(1) == lq.argmax(1)).mean() > 0.8
