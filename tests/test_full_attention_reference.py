"""Self-checks of the LLaDA / Dream PyTorch reference (full_attention_reference.py) on the
tiny checkpoints of full_attention_factory.py; no engine involved."""
import json
import math
import os

import pytest
import torch

import full_attention_factory as fac
from full_attention_reference import (FullAttentionModel, _dream_shift, dream_transfer_count, factor_count,
                                      llada_schedule, reference_generate, reference_logits)

torch.set_num_threads(1)


def _model(family, seed=0, **over):
    if family == "llada":
        cfg = fac.llada_config(**over)
        return FullAttentionModel(cfg, fac.random_llada_weights(cfg, seed))
    cfg = fac.dream_config(**over)
    return FullAttentionModel(cfg, fac.random_dream_weights(cfg, seed))


@pytest.fixture(scope="module")
def llada():
    return _model("llada")


@pytest.fixture(scope="module")
def dream():
    return _model("dream")


def _prompt(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 290, (n,), generator=g).tolist()


# (a) cached forwards at the block start reproduce the full forward ----------------------

@pytest.mark.parametrize("family,over", [("llada", {}), ("llada", {"n_kv_heads": 2}),
                                         ("llada", {"weight_tying": True}), ("dream", {})])
def test_cached_forwards_match_full(family, over):
    m = _model(family, **over)
    P, G, s, e = 7, 24, 15, 23
    x = torch.tensor(_prompt(P) + [m.mask_id] * G)
    x[P:s] = torch.tensor(_prompt(s - P, seed=3))       # earlier blocks decoded
    logits, kv = m.full(x)
    assert logits.shape == (P + G, m.head.shape[0])
    assert torch.equal(reference_logits(m, x), logits)
    pre = m.prefix(x[s:], s, [(k[:, :s], v[:, :s]) for k, v in kv])
    torch.testing.assert_close(pre, logits[s:], atol=1e-5, rtol=0)
    cache = [(k.clone(), v.clone()) for k, v in kv]
    dual = m.dual(x[s:e], s, e, cache)
    torch.testing.assert_close(dual, logits[s:e], atol=1e-5, rtol=0)
    torch.testing.assert_close(cache[0][0], kv[0][0], atol=1e-6, rtol=0)
    assert m.nfe == 4


def test_llada_logits_have_embedding_size_columns_and_mask_is_not_argmax(llada):
    x = _prompt(9) + [llada.mask_id] * 20
    logits = llada.full(x)[0]
    assert logits.shape[1] == 304
    assert torch.all(logits[:, llada.mask_id] == 0)
    assert not torch.any(logits.argmax(-1) == llada.mask_id)


def test_written_checkpoints_load(tmp_path):
    p = fac.write_llada(str(tmp_path / "llada"), seed=4)
    d = fac.write_dream(str(tmp_path / "dream"), seed=4)
    assert set(os.listdir(d)) == {"config.json", "generation_config.json", "model.safetensors"}
    gen = json.load(open(os.path.join(d, "generation_config.json")))
    assert gen["mask_token_id"] == 299 and gen["eos_token_id"] == 298
    w = fac.load_weights(p)
    assert "model.transformer.ff_out.weight" in w and "model.transformer.blocks.1.up_proj.weight" in w
    assert "model.layers.0.self_attn.k_proj.bias" in fac.load_weights(d)
    x = _prompt(6) + [299] * 10
    for path, fam in ((p, "llada"), (d, "dream")):
        torch.testing.assert_close(FullAttentionModel.from_path(path).full(x)[0], _model(fam, seed=4).full(x)[0])
    tied = fac.write_llada(str(tmp_path / "tied"), fac.llada_config(weight_tying=True), dtype=torch.bfloat16)
    assert "model.transformer.ff_out.weight" not in fac.load_weights(tied)
    assert json.load(open(os.path.join(tied, "config.json")))["torch_dtype"] == "bfloat16"
    r = reference_generate(tied, _prompt(5), sampler="threshold", threshold=0.5, max_new_tokens=16, block_size=8)
    assert len(r["ids"]) == 16 and 299 not in r["ids"]
    logits = FullAttentionModel.from_path(tied).full(x)[0]
    assert torch.all(logits[:, 299] == 0) and logits.shape[1] == 304


# (b) AdaBlock with delimiter_threshold = inf == Fast-dLLM v1 threshold ------------------

@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize("P,G,B,thr", [(5, 32, 8, 0.3), (13, 48, 16, 0.5), (9, 24, 8, 0.8)])
def test_adablock_inf_equals_fastdllm_threshold(llada, cache, P, G, B, thr):
    prompt = _prompt(P, seed=P)
    ada = reference_generate(llada, prompt, sampler="adablock", threshold=thr, max_new_tokens=G, block_size=B,
                             cache=cache, delimiter_ids=[int(t) for t in range(300)])
    fd = reference_generate(llada, prompt, sampler="threshold", threshold=thr, max_new_tokens=G, block_size=B,
                            steps=G, cache=cache)
    assert ada["ids"] == fd["ids"] and ada["nfe"] == fd["nfe"]
    assert ada["block_lengths"] == [B] * (G // B)
    assert sum(ada["nfe_history"]) == ada["nfe"] and len(ada["nfe_history"]) == G // B


# (c) forward counts ------------------------------------------------------------------------

def test_llada_low_confidence_nfe_is_steps(llada):
    for G, B, steps in ((32, 8, 16), (32, 8, 32), (16, 8, 20)):   # last: S = 10 > B = 8
        r = reference_generate(llada, _prompt(6), sampler="low_confidence", max_new_tokens=G, block_size=B,
                               steps=steps)
        assert r["nfe"] == steps and llada.mask_id not in r["ids"]
    # 3.2's fixed rule stops when the block is full: S > B costs B forwards per block
    for cache in ("none", "prefix", "dual"):
        r = reference_generate(llada, _prompt(6), sampler="fixed", max_new_tokens=16, block_size=8, steps=20,
                               cache=cache)
        assert r["nfe"] == 16
        r = reference_generate(llada, _prompt(6), sampler="fixed", max_new_tokens=32, block_size=8, steps=12,
                               cache=cache)
        assert r["nfe"] == 12 and llada.mask_id not in r["ids"]


def test_dream_algs_nfe_is_steps(dream):
    for alg in ("maskgit_plus", "topk_margin", "entropy"):
        for G, steps in ((32, 8), (24, 24), (16, 5)):
            r = reference_generate(dream, _prompt(7), sampler=alg, max_new_tokens=G, steps=steps)
            assert r["nfe"] == steps and dream.mask_id not in r["ids"]
    r = reference_generate(dream, _prompt(7), sampler="origin", max_new_tokens=16, steps=1)
    assert r["nfe"] == 1 and dream.mask_id not in r["ids"]


def test_check_before_vs_check_after_loops(llada):
    """Everything committed at the block-start forward: 45484e4 runs no cached forward
    (1 NFE/block), dParallel's old loop runs one (2 NFE/block), no cache: 1 NFE/block."""
    G, B = 32, 8
    for cache in ("none", "prefix", "dual"):
        fd = reference_generate(llada, _prompt(5), sampler="threshold", threshold=0.0, max_new_tokens=G,
                                block_size=B, cache=cache)
        dp = reference_generate(llada, _prompt(5), sampler="entropy_threshold", entropy_threshold=100.0,
                                max_new_tokens=G, block_size=B, cache=cache)
        assert fd["nfe"] == G // B
        assert dp["nfe"] == (G // B) * (1 if cache == "none" else 2)
        assert fd["ids"] == dp["ids"]                   # both: every block from its start forward


def test_dream_threshold_steps_extension(dream):
    r = reference_generate(dream, _prompt(5), sampler="threshold", threshold=0.0, max_new_tokens=32, steps=8)
    assert r["nfe"] == 8 and dream.mask_id not in r["ids"]
    r = reference_generate(dream, _prompt(5), sampler="threshold", threshold=0.95, max_new_tokens=32, steps=8)
    assert r["nfe"] > 8 and dream.mask_id not in r["ids"]


# (d) schedules and rules -------------------------------------------------------------------

def test_schedules():
    assert llada_schedule(8, 3) == [3, 3, 2]
    assert llada_schedule(32, 4) == [8] * 4
    assert llada_schedule(8, 10) == [1] * 8 + [0, 0]
    ts = torch.linspace(1, 1e-3, 257)
    assert dream_transfer_count(256, ts, 0, 256) == 0   # 256 * (0.999/256) = 0.999 -> 0
    assert dream_transfer_count(256, ts, 255, 256) == 256
    ts = torch.linspace(1, 1e-3, 5)
    # ts = 1, .75025, .5005, .25075, .001: 32 * (1 - s/t) = 7.99, 10.65, 15.97 -> truncated
    assert [dream_transfer_count(32, ts, i, 4) for i in range(4)] == [7, 10, 15, 32]


def test_factor_rule_counts():
    assert factor_count([0.3], 1.0) == 1                       # M = 1
    assert factor_count([0.9, 0.5, 0.4], 1.0) == 1             # fails at n = 2 (thr 2/3)
    assert factor_count([0.9, 0.8, 0.1], 1.0) == 3             # first failure at n = M: quirk, all
    assert factor_count([0.9, 0.8, 0.1, 0.1], 1.0) == 2
    assert factor_count([0.99, 0.9, 0.85], 1.0) == 3           # nothing fails


# (e) Dream cached S = 1 quirk ----------------------------------------------------------------

@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_dream_cached_s1_costs_two_forwards(dream, cache):
    P, G, B = 6, 32, 8
    r = reference_generate(dream, _prompt(P), sampler="maskgit_plus", max_new_tokens=G, block_size=B,
                           steps=G // B, cache=cache)
    assert r["nfe"] == 2 * (G // B)
    for b in range(G // B):
        blk = r["ids"][b * B:(b + 1) * B]
        assert blk[0] != dream.mask_id and blk[1:] == [dream.mask_id] * (B - 1)
    r = reference_generate(dream, _prompt(P), sampler="entropy", max_new_tokens=G, block_size=B,
                           steps=3 * (G // B), cache=cache)
    assert r["nfe"] == 3 * (G // B) and dream.mask_id not in r["ids"]
    # threshold alg: the cached loop checks "block full" after its forward, so B = 1 costs 2
    r = reference_generate(dream, _prompt(P), sampler="threshold", threshold=0.9, max_new_tokens=8,
                           block_size=1, steps=8, cache=cache)
    assert r["nfe"] == 16 and dream.mask_id not in r["ids"]


# (f) every sampler runs and leaves no masks ---------------------------------------------------

LLADA_RUNS = [("low_confidence", "none", {})] + [
    (s, c, kw) for c in ("none", "prefix", "dual") for s, kw in (
        ("fixed", {}), ("threshold", {"threshold": 0.4}), ("factor", {"factor": 1.0}),
        ("entropy_threshold", {"entropy_threshold": 2.5}), ("entropy_threshold", {}),
        ("adablock", {"threshold": 0.4, "delimiter_threshold": 0.2}))]
DREAM_RUNS = [(a, "none", {}) for a in ("maskgit_plus", "topk_margin", "entropy")] + [
    ("threshold", "none", {"threshold": 0.5}), ("entropy_threshold", "none", {"entropy_threshold": 2.5}),
    ("adablock", "none", {"threshold": 0.5, "delimiter_threshold": 0.2}),
    ("adablock", "dual", {"threshold": 0.5, "delimiter_threshold": 0.2})] + [
    (s, c, kw) for c in ("prefix", "dual") for s, kw in (
        ("threshold", {"threshold": 0.5}), ("maskgit_plus", {}), ("topk_margin", {}), ("entropy", {}))]


@pytest.mark.parametrize("P,G,B", [(5, 16, 8), (13, 48, 16), (9, 32, 8)])
def test_every_sampler_fills_everything(llada, dream, P, G, B):
    prompt = _prompt(P, seed=G)
    steps = 2 * (G // B)
    for sampler, cache, kw in LLADA_RUNS:
        r = reference_generate(llada, prompt, sampler=sampler, cache=cache, max_new_tokens=G, block_size=B,
                               steps=steps, delimiter_ids=[7, 61, 130], **kw)
        assert len(r["ids"]) == G and llada.mask_id not in r["ids"], (sampler, cache)
        assert r["nfe"] >= G // B
    for sampler, cache, kw in DREAM_RUNS:
        blocked = cache != "none" or sampler in ("entropy_threshold", "adablock")
        st = G // 4 if sampler == "threshold" and cache == "none" else steps
        r = reference_generate(dream, prompt, sampler=sampler, cache=cache, max_new_tokens=G,
                               block_size=B if blocked else None, steps=st, **kw)
        assert len(r["ids"]) == G and dream.mask_id not in r["ids"], (sampler, cache)
        if "block_lengths" in r:
            assert sum(r["block_lengths"]) == G and sum(r["nfe_history"]) == r["nfe"]


def test_unsupported_combinations_raise(llada, dream):
    with pytest.raises(ValueError):
        reference_generate(dream, _prompt(5), sampler="adablock", cache="prefix", max_new_tokens=16)
    with pytest.raises(ValueError):
        reference_generate(dream, _prompt(5), sampler="entropy_threshold", cache="dual", max_new_tokens=16)
    with pytest.raises(ValueError):
        reference_generate(llada, _prompt(5), sampler="low_confidence", cache="dual", max_new_tokens=16, steps=16)
    with pytest.raises(ValueError):
        reference_generate(llada, _prompt(5), sampler="threshold", max_new_tokens=20, block_size=8)
    with pytest.raises(ValueError):
        reference_generate(dream, _prompt(5), sampler="origin", max_new_tokens=16, steps=4)


# (g) a confident delimiter moves the block boundary --------------------------------------------

@pytest.mark.parametrize("family,cache", [("llada", "none"), ("llada", "prefix"), ("llada", "dual"),
                                          ("dream", "none"), ("dream", "dual")])
def test_delimiter_moves_block_boundary(llada, dream, family, cache):
    m = llada if family == "llada" else dream
    P, G, init = 8, 48, 8
    prompt = _prompt(P, seed=11)
    logits = m.full(prompt + [m.mask_id] * G)[0]
    if family == "dream":
        logits = _dream_shift(logits)
    W = int(0.25 * G)
    rows = logits[P:P + W]
    pred, conf = rows.argmax(-1), torch.softmax(rows, -1).max(-1)[0]
    for rel in range(W):
        tok = int(pred[rel])
        occ = [j for j in range(W) if int(pred[j]) == tok]
        best = max(occ, key=lambda j: float(conf[j]))
        if best + 1 != init:
            break
    else:
        pytest.fail("no usable delimiter in the window: pick another seed or prompt")
    r = reference_generate(m, prompt, sampler="adablock", threshold=0.5, max_new_tokens=G, block_size=init,
                           cache=cache, delimiter_ids=[tok], delimiter_threshold=0.0)
    assert r["block_lengths"][0] == best + 1 != init
    assert sum(r["block_lengths"]) == G and m.mask_id not in r["ids"]
    assert sum(r["nfe_history"]) == r["nfe"]
    never = reference_generate(m, prompt, sampler="adablock", threshold=0.5, max_new_tokens=G, block_size=init,
                               cache=cache, delimiter_ids=[tok], delimiter_threshold=1.5)
    assert never["block_lengths"] == [init] * (G // init)
    inf = reference_generate(m, prompt, sampler="adablock", threshold=0.5, max_new_tokens=G, block_size=init,
                             cache=cache, delimiter_ids=[tok], delimiter_threshold=math.inf)
    assert inf == never
