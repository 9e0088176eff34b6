"""LLaDA and Dream through the engine, token-exact (ids and forward counts)
against the PyTorch reference of full_attention_dllms.md
(tests/full_attention_reference.py) on tiny random fp32 checkpoints in the
official layouts: every sampler, cache, block size 8 / 16 / 32, prompt
lengths, thresholds, factors, delimiter sets that do and do not move the block
boundary; batched rows equal single sequences; bad combinations are clear
ValueErrors; a model that keeps predicting the mask token fails its request
instead of looping forever."""
import math

import numpy as np
import pytest
import torch

import fastdllm_rt
from full_attention_factory import (dream_config, llada_config, random_dream_weights, random_llada_weights,
                                    write_dream, write_llada)
from full_attention_reference import FullAttentionModel, reference_generate, reference_logits


@pytest.fixture(scope="module")
def llada(tmp_path_factory):
    path = write_llada(str(tmp_path_factory.mktemp("llada")), seed=1)
    return fastdllm_rt.Engine(path, threads=1), FullAttentionModel.from_path(path)


@pytest.fixture(scope="module")
def dream(tmp_path_factory):
    path = write_dream(str(tmp_path_factory.mktemp("dream")), seed=2)
    return fastdllm_rt.Engine(path, threads=1), FullAttentionModel.from_path(path)


def prompt_of(n, seed=0):
    return [int(t) for t in (np.arange(n) * (7 + seed) + 3 + seed) % 290]


def check(setup, prompt, **kw):
    engine, model = setup
    res = engine.generate_ids(prompt, **kw)
    ref = reference_generate(model, prompt, **kw)
    assert res.token_ids == ref["ids"], kw
    assert res.num_forwards == ref["nfe"], kw
    assert len(res.token_ids) == kw["max_new_tokens"]
    if "block_lengths" in ref:  # AdaBlock: the same block history
        assert res.block_lengths == ref["block_lengths"], kw
    return res, ref


# ---- LLaDA (full_attention_dllms.md section 3) --------------------------------

LLADA_CASES = [
    # 3.1 LLaDA's own sampler: exactly `steps` forwards (S > B included)
    dict(sampler="low_confidence", max_new_tokens=32, block_size=8, steps=16),
    dict(sampler="low_confidence", max_new_tokens=32, block_size=16, steps=32),
    dict(sampler="low_confidence", max_new_tokens=16, block_size=8, steps=32),
    # 3.2 Fast-dLLM v1: fixed, threshold, factor; no cache, prefix, dual
    *[dict(sampler="fixed", max_new_tokens=32, block_size=b, steps=s, cache=c)
      for b, s in [(8, 8), (16, 16), (32, 8)] for c in ("none", "prefix", "dual")],
    *[dict(sampler="threshold", max_new_tokens=32, block_size=b, steps=32 // b, threshold=t, cache=c)
      for b in (8, 16, 32) for t in (0.05, 0.3) for c in ("none", "prefix", "dual")],
    *[dict(sampler="factor", max_new_tokens=32, block_size=b, steps=32 // b, factor=f, cache=c)
      for b, f in [(8, 1.0), (16, 4.0), (32, 9.0)] for c in ("none", "prefix", "dual")],
    # 3.3 dParallel: entropy threshold; its cached loops run one cached forward more
    *[dict(sampler="entropy_threshold", max_new_tokens=32, block_size=b, steps=32 // b, entropy_threshold=h, cache=c)
      for b in (8, 16) for h in (3.0, 5.0) for c in ("none", "prefix", "dual")],
    # 3.4 AdaBlock: fixed blocks (delimiter_threshold inf), G not a multiple of the block
    *[dict(sampler="adablock", max_new_tokens=g, block_size=b, threshold=0.1, cache=c)
      for g, b in [(24, 8), (20, 16)] for c in ("none", "prefix", "dual")],
]


@pytest.mark.parametrize("plen", [5, 12])
@pytest.mark.parametrize("kw", LLADA_CASES, ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_llada_token_exact(llada, kw, plen):
    check(llada, prompt_of(plen), **kw)


def test_llada_low_confidence_runs_exactly_steps(llada):
    res, _ = check(llada, prompt_of(6), sampler="low_confidence", max_new_tokens=16, block_size=8, steps=40)
    assert res.num_forwards == 40  # S = 20 > B = 8: the late forwards change nothing, as upstream


def test_llada_dparallel_cached_loop_counts_one_more(llada):
    """With a threshold that fills each block at its start, Fast-dLLM v1
    (45484e4) runs one forward per block and dParallel's old loop two."""
    p = prompt_of(7)
    a = llada[0].generate_ids(p, sampler="threshold", threshold=0.0, max_new_tokens=32, block_size=8, steps=4,
                              cache="dual")
    b = llada[0].generate_ids(p, sampler="entropy_threshold", entropy_threshold=100.0, max_new_tokens=32,
                              block_size=8, steps=4, cache="dual")
    assert (a.num_forwards, b.num_forwards) == (4, 8)
    check(llada, p, sampler="entropy_threshold", entropy_threshold=100.0, max_new_tokens=32, block_size=8, steps=4,
          cache="prefix")


def window_delimiter(setup, prompt, G):
    """A token the model predicts in the first block's delimiter window (not at
    its first position), and that prediction's confidence."""
    engine, model = setup
    x = torch.tensor(prompt + [model.mask_id] * G)
    logits = reference_logits(model, x)
    if model.family == "dream":
        logits = torch.cat([logits[:1], logits[:-1]])
    P, W = len(prompt), G // 4
    p = torch.softmax(logits[P:P + W], -1)
    conf, tok = p.max(-1)
    j = 1 + int(conf[1:].argmax())
    return int(tok[j]), float(conf[j]), j


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_llada_adablock_delimiters_move_the_block_boundary(llada, cache):
    prompt, G = prompt_of(9), 48
    tok, conf, j = window_delimiter(llada, prompt, G)
    fixed = dict(sampler="adablock", max_new_tokens=G, block_size=16, threshold=0.2, cache=cache)
    _, ref_fixed = check(llada, prompt, **fixed, delimiter_ids=[tok], delimiter_threshold=math.inf)
    assert ref_fixed["block_lengths"][0] == 16
    # below the delimiter's confidence: the first block ends at the delimiter
    _, moved = check(llada, prompt, **fixed, delimiter_ids=[tok, 3], delimiter_threshold=conf * 0.5)
    assert moved["block_lengths"][0] <= j + 1 and moved["block_lengths"] != ref_fixed["block_lengths"]
    # above it: the fallback block length, though the delimiter is predicted
    _, kept = check(llada, prompt, **fixed, delimiter_ids=[tok], delimiter_threshold=min(1.0, conf * 1.5 + 0.01))
    assert kept["block_lengths"][0] == 16


# ---- Dream (full_attention_dllms.md section 4) --------------------------------

DREAM_CASES = [
    # 4.1 Dream's own algorithms over the whole row (no blocks), and confidence_threshold
    *[dict(sampler=a, max_new_tokens=24, steps=s) for a in ("maskgit_plus", "topk_margin", "entropy")
      for s in (24, 7, 3)],
    dict(sampler="origin", max_new_tokens=16, steps=1),
    *[dict(sampler="threshold", max_new_tokens=24, steps=s, threshold=t) for s in (4, 8) for t in (0.05, 0.5)],
    # 4.2 Fast-dLLM v1's Dream cache: threshold or the alg name (scored by entropy), S = 1 quirk
    *[dict(sampler=a, max_new_tokens=32, block_size=b, steps=s, threshold=0.2, cache=c)
      for a in ("threshold", "maskgit_plus", "entropy") for b, s in [(8, 16), (16, 8), (32, 4)]
      for c in ("prefix", "dual")],
    dict(sampler="entropy", max_new_tokens=16, block_size=8, steps=2, cache="dual"),
    # 4.3 dParallel: strict entropy threshold, no cache
    *[dict(sampler="entropy_threshold", max_new_tokens=32, block_size=b, entropy_threshold=h)
      for b in (8, 16, 32) for h in (3.0, 5.5)],
    # 4.4 AdaBlock: none or dual, the hard-coded delimiter list
    *[dict(sampler="adablock", max_new_tokens=g, block_size=b, threshold=0.1, cache=c)
      for g, b in [(24, 8), (20, 16)] for c in ("none", "dual")],
]


@pytest.mark.parametrize("plen", [4, 11])
@pytest.mark.parametrize("kw", DREAM_CASES, ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_dream_token_exact(dream, kw, plen):
    check(dream, prompt_of(plen, 1), **kw)


def test_dream_threshold_grows_its_step_count(dream):
    """confidence_threshold's quirk: a deferral on the last step adds a step."""
    res, _ = check(dream, prompt_of(5), sampler="threshold", max_new_tokens=16, steps=4, threshold=0.99)
    assert res.num_forwards > 4


def test_dream_cached_one_step_blocks_keep_their_masks(dream):
    res, _ = check(dream, prompt_of(5), sampler="maskgit_plus", max_new_tokens=16, block_size=8, steps=2,
                   cache="prefix")
    mask = dream[1].mask_id
    assert res.num_forwards == 4  # S = 1: two forwards per block
    assert res.token_ids[0] != mask and res.token_ids[1:8] == [mask] * 7


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_dream_adablock_delimiters_move_the_block_boundary(dream, cache):
    prompt, G = prompt_of(8, 2), 48
    tok, conf, j = window_delimiter(dream, prompt, G)
    kw = dict(sampler="adablock", max_new_tokens=G, block_size=16, threshold=0.2, cache=cache)
    _, fixed = check(dream, prompt, **kw, delimiter_ids=[tok], delimiter_threshold=math.inf)
    _, moved = check(dream, prompt, **kw, delimiter_ids=[tok], delimiter_threshold=conf * 0.5)
    assert fixed["block_lengths"][0] == 16 and moved["block_lengths"][0] <= j + 1


def test_dream_origin_is_seeded(dream):
    engine = dream[0]
    p = prompt_of(6)
    a = engine.generate_ids(p, sampler="origin", max_new_tokens=16, steps=4, seed=5)
    b = engine.generate_ids(p, sampler="origin", max_new_tokens=16, steps=4, seed=5)
    assert a.token_ids == b.token_ids and a.num_forwards == 4


# ---- both families -------------------------------------------------------------

@pytest.mark.parametrize("family", ["llada", "dream"])
def test_logits_are_the_bidirectional_forward(request, family):
    engine, model = request.getfixturevalue(family)
    ids = prompt_of(13) + [model.mask_id] * 5
    got = engine.logits(ids)
    want = reference_logits(model, torch.tensor(ids)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_llada_variants_load_and_match(tmp_path):
    """Tied output head (logits from wte), grouped KV heads, a bf16 checkpoint."""
    for name, cfg in [("tied", llada_config(weight_tying=True)), ("gqa", llada_config(n_kv_heads=2))]:
        path = write_llada(str(tmp_path / name), cfg, seed=4)
        with fastdllm_rt.Engine(path, threads=1) as engine:
            check((engine, FullAttentionModel.from_path(path)), prompt_of(6), sampler="threshold", threshold=0.2,
                  max_new_tokens=16, block_size=8, steps=2, cache="dual")
    path = write_llada(str(tmp_path / "bf16"), dtype=torch.bfloat16, seed=4)
    with fastdllm_rt.Engine(path, threads=1) as engine:
        assert engine.model.dtype == "bfloat16"
        res = engine.generate_ids(prompt_of(6), sampler="threshold", threshold=0.2, max_new_tokens=16, block_size=8,
                                  steps=2)
        assert len(res.token_ids) == 16 and engine.config.mask_token_id not in res.token_ids


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_batched_rows_equal_single_sequences(request, family):
    engine, model = request.getfixturevalue(family)
    if family == "llada":
        kws = [dict(sampler="threshold", threshold=0.2, block_size=8, steps=4, cache="dual"),
               dict(sampler="low_confidence", block_size=16, steps=8),
               dict(sampler="adablock", threshold=0.1, block_size=8, cache="prefix")]
    else:
        kws = [dict(sampler="entropy", steps=9), dict(sampler="threshold", threshold=0.2, block_size=8, steps=8,
                                                     cache="prefix"),
               dict(sampler="entropy_threshold", entropy_threshold=4.0, block_size=16)]
    prompts = [prompt_of(n, n) for n in (4, 9, 13)]
    singles = [engine.generate_ids(p, max_new_tokens=32, **kw) for p, kw in zip(prompts, kws)]
    # submitted together: they share forwards (different samplers, caches and lengths in one batch)
    streams = [engine.stream_ids(p, max_new_tokens=32, **kw) for p, kw in zip(prompts, kws)]
    for s in streams:
        list(s)
    batched = [s.result for s in streams]
    assert engine.stats()["batch_size_histogram"].get(3, 0) > 0  # some forwards ran all three
    for single, b in zip(singles, batched):
        assert b.token_ids == single.token_ids and b.num_forwards == single.num_forwards
    stats = engine.stats()
    assert stats["pages_in_use"] == 0


@pytest.mark.parametrize("family,kw,match", [
    ("llada", dict(sampler="low_confidence", cache="dual"), "LLaDA's own sampler has no cache"),
    ("llada", dict(sampler="maskgit_plus"), "is not a llada sampler; llada models take low_confidence"),
    ("llada", dict(sampler="threshold", max_new_tokens=20, block_size=8), "must be a multiple of block_size"),
    ("llada", dict(sampler="fixed", max_new_tokens=32, block_size=8, steps=6), "steps \\(6\\) must be a multiple"),
    ("llada", dict(sampler="threshold", temperature=0.7), "temperature must be 0"),
    ("llada", dict(sampler="margin_threshold"), "is not a llada sampler"),
    ("dream", dict(sampler="adablock", cache="prefix"), "no prefix-only cache"),
    ("dream", dict(sampler="entropy_threshold", cache="dual"), "dParallel's Dream sampler has no cache"),
    ("dream", dict(sampler="low_confidence"), "is not a dream sampler"),
    ("dream", dict(sampler="threshold", max_new_tokens=30, steps=4, block_size=None), "multiple of steps"),
    ("dream", dict(sampler="maskgit_plus", block_size=16), "block_size does not apply to Dream's sampler"),
    ("dream", dict(sampler="entropy", cache="sideways"), "cache must be one of"),
    ("dream", dict(sampler="adablock", delimiter_ids=[-1]), "delimiter_ids must be"),
    ("dream", dict(sampler="adablock", delimiter_ids=[5000]), "delimiter_ids: token 5000 is outside"),
])
def test_bad_combinations_are_clear_errors(request, family, kw, match):
    engine, _ = request.getfixturevalue(family)
    kw = {k: v for k, v in dict(dict(max_new_tokens=32, block_size=8), **kw).items() if v is not None}
    with pytest.raises(ValueError, match=match):
        engine.generate_ids(prompt_of(5), **kw)
    assert len(engine.generate_ids(prompt_of(5), sampler="threshold", threshold=0.2, max_new_tokens=8, block_size=8,
                                   steps=1, cache="dual").token_ids) == 8  # still usable


def test_whole_row_must_fit_one_forward(tmp_path):
    path = write_llada(str(tmp_path / "m"))
    with fastdllm_rt.Engine(path, threads=1, max_batch_tokens=32) as engine:
        with pytest.raises(ValueError, match="exceeds the engine's max_batch_tokens"):
            engine.generate_ids(prompt_of(5), max_new_tokens=32, block_size=8)
        with pytest.raises(ValueError, match="at most max_batch_tokens=32"):
            engine.logits(prompt_of(40))


def test_cache_is_refused_for_fast_dllm_v2(tmp_path):
    from model_factory import make_config, write_model
    path = write_model(str(tmp_path / "v2"), make_config())
    with fastdllm_rt.Engine(path, threads=1) as engine:
        with pytest.raises(ValueError, match="use_block_cache"):
            engine.generate_ids([1, 2, 3], max_new_tokens=32, cache="dual")
        with pytest.raises(ValueError, match="not a fast_dllm_v2 sampler"):
            engine.generate_ids([1, 2, 3], max_new_tokens=32, sampler="adablock")


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_a_model_that_predicts_the_mask_fails_alone(tmp_path, family):
    """The official loops would repeat the same forward forever; the request
    fails with an error naming the mask token and the engine stays usable."""
    if family == "llada":
        cfg = llada_config()
        w = random_llada_weights(cfg, seed=3)
        w["model.transformer.ff_out.weight"][cfg["mask_token_id"]] = w["model.transformer.ff_out.weight"][5] * 50
        path = write_llada(str(tmp_path / "m"), cfg, weights=w)
        kw = dict(sampler="threshold", threshold=0.9, block_size=8, steps=1)
    else:
        cfg = dream_config()
        w = random_dream_weights(cfg, seed=3)
        w["lm_head.weight"][cfg["mask_token_id"]] = w["lm_head.weight"][5] * 50
        path = write_dream(str(tmp_path / "m"), cfg, weights=w)
        kw = dict(sampler="entropy_threshold", entropy_threshold=0.5, block_size=8)
    with fastdllm_rt.Engine(path, threads=1) as engine:
        with pytest.raises(fastdllm_rt.GenerationError, match="keeps predicting the mask token 299"):
            engine.generate_ids(prompt_of(5), max_new_tokens=8, **kw)
        assert engine.stats()["pages_in_use"] == 0
        # Dream's own algorithms run a fixed number of steps: masks are left where the model predicts the mask
        if family == "dream":
            res = engine.generate_ids(prompt_of(5), sampler="maskgit_plus", max_new_tokens=8, steps=2)
            assert res.num_forwards == 2


def test_loader_errors_name_the_key(tmp_path):
    from fastdllm_rt.errors import LoadError
    path = write_llada(str(tmp_path / "a"), llada_config(include_qkv_bias=True))
    with pytest.raises(LoadError, match="'include_qkv_bias' = True is not supported"):
        fastdllm_rt.Engine(path)
    import json
    import os
    path = write_llada(str(tmp_path / "b"))
    cfg = llada_config()
    del cfg["mlp_hidden_size"]
    cfg["mlp_ratio"] = None
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(LoadError, match="mlp_hidden_size"):
        fastdllm_rt.Engine(path)
    path = write_llada(str(tmp_path / "c"))
    from safetensors.torch import load_file, save_file
    t = load_file(os.path.join(path, "model.safetensors"))
    del t["model.transformer.blocks.1.attn_out.weight"]
    save_file(t, os.path.join(path, "model.safetensors"))
    with pytest.raises(LoadError, match="'model.transformer.blocks.1.attn_out.weight' is missing"):
        fastdllm_rt.Engine(path)


# ---- edge cases (a review of the first version found each) ---------------------

def test_dream_schedule_is_torch_linspace():
    """k = int(n (1 - s/t)) turns on fp32 roundings: the schedule must be
    torch.linspace's bit for bit (its fused multiply-adds), for every step count."""
    T = fastdllm_rt._C._testing.ops
    for steps in list(range(1, 300)) + [511, 512, 777, 1024]:
        want = torch.linspace(1, 1e-3, steps + 1).numpy()
        got = np.asarray(T.dream_timesteps(steps), np.float32)
        np.testing.assert_array_equal(got, want, err_msg=f"steps={steps}")


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_prompt_masks_are_candidates_of_full_forwards(request, family):
    """The official full forwards take every mask before the block's end as a
    candidate (mask_index[:, end:] = 0), prompt masks included; cached steps only
    the block's."""
    engine, model = request.getfixturevalue(family)
    prompt = prompt_of(9)
    prompt[2] = prompt[6] = model.mask_id
    cases = ([dict(sampler="threshold", threshold=0.3, block_size=8, steps=2, cache=c) for c in ("none", "prefix", "dual")]
             + [dict(sampler="low_confidence", block_size=8, steps=4),
                dict(sampler="adablock", threshold=0.3, block_size=8, cache="prefix"),
                dict(sampler="entropy_threshold", entropy_threshold=4.0, block_size=8, steps=2)]
             if family == "llada" else
             [dict(sampler="entropy_threshold", entropy_threshold=4.0, block_size=8),
              dict(sampler="adablock", threshold=0.3, block_size=8, cache="none"),
              dict(sampler="adablock", threshold=0.3, block_size=8, cache="dual"),
              dict(sampler="threshold", threshold=0.3, block_size=8, steps=2, cache="prefix"),
              dict(sampler="maskgit_plus", steps=6)])
    for kw in cases:
        check((engine, model), prompt, max_new_tokens=16, **kw)
    if family == "llada":  # the fixed schedule cannot cover the block and the prompt's masks: a clear error
        with pytest.raises(fastdllm_rt.GenerationError, match="fixed schedule .* is used up"):
            engine.generate_ids(prompt, max_new_tokens=16, sampler="fixed", block_size=8, steps=8)
    res = engine.generate_ids(prompt, max_new_tokens=16, **cases[0])
    assert engine.stats()["pages_in_use"] == 0 and len(res.token_ids) == 16


@pytest.mark.parametrize("family", ["llada", "dream"])
@pytest.mark.parametrize("block", [1, 3, 12])
def test_block_sizes_need_not_be_multiples_of_8(request, family, block):
    sampler = dict(sampler="threshold", threshold=0.3, steps=24 // block, cache="dual") if family == "llada" else \
        dict(sampler="entropy_threshold", entropy_threshold=4.0)
    check(request.getfixturevalue(family), prompt_of(7), max_new_tokens=24, block_size=block, **sampler)
    check(request.getfixturevalue(family), prompt_of(7), max_new_tokens=20, block_size=block, sampler="adablock",
          threshold=0.3, cache="none")


def test_peaked_rows_keep_float64_confidences(tmp_path):
    """Where a confidence rounds to 1 in fp32, Fast-dLLM v1 and AdaBlock still
    order and threshold the float64 values: a sharpened output head makes such
    rows common, and threshold=1.0 (commit only the best unless exactly 1) and
    the fixed rule's top-k still match the reference."""
    cfg = llada_config()
    w = random_llada_weights(cfg, seed=5)
    # x15: tails 1e-12 .. 1e-6 (fp32 rounds those confidences to 1); at x30 some
    # rows reach exactly 1.0 in float64 too, ties whose order torch leaves open
    w["model.transformer.ff_out.weight"] *= 15
    path = write_llada(str(tmp_path / "sharp"), cfg, weights=w)
    with fastdllm_rt.Engine(path, threads=1) as engine:
        setup = (engine, FullAttentionModel.from_path(path))
        p = prompt_of(6)
        for kw in [dict(sampler="threshold", threshold=1.0, block_size=8, steps=2, cache="none"),
                   dict(sampler="adablock", threshold=1.0, block_size=8, cache="dual"),
                   dict(sampler="fixed", block_size=8, steps=16, cache="prefix"),
                   dict(sampler="factor", factor=0.001, block_size=8, steps=2)]:
            check(setup, p, max_new_tokens=16, **kw)


@pytest.mark.parametrize("family,kw", [
    ("dream", dict(sampler="threshold")), ("dream", dict(sampler="entropy")), ("llada", dict(sampler="fixed")),
    ("llada", dict(sampler="adablock", threshold=0.5))])
def test_zero_new_tokens_runs_nothing(request, family, kw):
    engine, _ = request.getfixturevalue(family)
    res = engine.generate_ids(prompt_of(5), max_new_tokens=0, **dict(dict(block_size=8) if family == "llada" else {},
                                                                    **kw))
    assert res.token_ids == [] and res.num_forwards == 0


def test_steps_are_bounded(dream):
    with pytest.raises(ValueError, match="steps must be at most"):
        dream[0].generate_ids(prompt_of(5), sampler="entropy", max_new_tokens=16, steps=(1 << 20) + 1)


def test_cancel_frees_the_row_pages(llada):
    """A LLaDA request cancelled while it runs releases its pages at once; the
    engine goes on with the next request exactly."""
    engine, model = llada
    kw = dict(sampler="low_confidence", max_new_tokens=64, block_size=8, steps=64)
    s = engine.stream_ids(prompt_of(9), **kw)
    s.close()
    assert engine.stats()["pages_in_use"] == 0
    check(llada, prompt_of(9), **dict(kw, max_new_tokens=16, steps=16))


def test_dream_generation_config_sampling_keys_are_not_taken(tmp_path):
    """Dream folders ship a generation_config.json for Dream's own generate
    (temperature, top_p, alg ...); the engine takes only max_new_tokens and steps
    from it, so the greedy official samplers run by default."""
    import json
    import os
    path = write_dream(str(tmp_path / "d"))
    with open(os.path.join(path, "generation_config.json")) as f:
        gc = json.load(f)
    gc.update(temperature=0.2, top_p=0.95, alg="entropy", max_new_tokens=24, steps=12)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(gc, f)
    with fastdllm_rt.Engine(path, threads=1) as engine:
        assert engine.generation_config.temperature == 0 and engine.generation_config.steps == 12
        res = engine.generate_ids(prompt_of(5))
        assert len(res.token_ids) == 24 and res.num_forwards == 12
