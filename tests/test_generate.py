"""The engine's decoding is token-exact against the PyTorch reference of the
spec's algorithm (tests/ref_generate.py): generated ids and forward counts, fp32
weights, over seeds, prompt lengths, block/sub-block sizes, thresholds, the
block cache, and a stop token hit mid-block."""
import numpy as np
import pytest

import fastdllm_rt
from model_factory import load_weights, make_config, write_model
from ref_generate import ref_generate
from reference import RefQwen2

MASK = 330


@pytest.fixture(scope="module", params=[3, 11])
def setup(request, tmp_path_factory):
    cfg = make_config(tie_word_embeddings=request.param == 11)
    path = write_model(str(tmp_path_factory.mktemp("gen")), cfg, seed=request.param)
    return fastdllm_rt.Engine(path), RefQwen2(cfg, load_weights(path)), request.param


def check(engine, ref, prompt, **kw):
    res = engine.generate_ids(list(prompt), length_rule="upstream", **kw)
    ids, forwards = ref_generate(ref, prompt, kw["max_new_tokens"], block_size=kw["block_size"],
                                 small_block_size=kw["sub_block_size"], threshold=kw["threshold"],
                                 use_block_cache=kw["use_block_cache"], mask_id=MASK,
                                 stop_token=kw["stop_token_id"])
    assert res.token_ids == ids, kw
    assert res.num_forwards == forwards, kw
    return res


@pytest.mark.parametrize("bs", [(32, 8), (16, 4), (32, 32), (64, 16)], ids=lambda b: f"B{b[0]}S{b[1]}")
@pytest.mark.parametrize("threshold", [0.5, 0.9, 1.0])
@pytest.mark.parametrize("block_cache", [False, True], ids=["nocache", "blockcache"])
def test_token_exact(setup, bs, threshold, block_cache, isa):
    engine, ref, seed = setup
    B, S = bs
    rng = np.random.default_rng(seed * 100 + B + S)
    # shorter than, equal to, not a multiple of, and a multiple of (> 1 block) the block size
    for plen in (5, B, B + 9, 2 * B):
        prompt = rng.integers(0, MASK, plen)
        check(engine, ref, prompt, max_new_tokens=2 * B + 7, block_size=B, sub_block_size=S, threshold=threshold,
              use_block_cache=block_cache, stop_token_id=329)


@pytest.mark.parametrize("block_cache", [False, True], ids=["nocache", "blockcache"])
def test_stop_token_mid_block(setup, block_cache):
    engine, ref, seed = setup
    prompt = list(np.random.default_rng(seed).integers(0, MASK, 21))
    kw = dict(max_new_tokens=96, block_size=32, sub_block_size=8, threshold=0.9, use_block_cache=block_cache)
    free = engine.generate_ids(prompt, stop_token_id=329, length_rule="upstream", **kw).token_ids
    # Pick a token first produced in the middle of the second block (index 11 + 14 of the output)
    # as the stop token: generation must end right after it, without the commit forward.
    stop = free[11 + 14]
    assert stop != MASK
    res = check(engine, ref, prompt, stop_token_id=int(stop), **kw)
    assert res.finish_reason == "stop" and res.token_ids[-1] == stop
    assert stop not in res.token_ids[:-1]
    assert len(res.token_ids) <= 26


def test_max_new_tokens_below_block_generates_nothing_but_the_prefill_token(setup):
    engine, ref, _ = setup
    prompt = list(range(64))  # P0 > B and P0 % B == 0: the prefill's AR token is emitted
    res = check(engine, ref, prompt, max_new_tokens=31, block_size=32, sub_block_size=8, threshold=0.9,
                use_block_cache=False, stop_token_id=329)
    assert len(res.token_ids) == 1 and res.num_forwards == 1
    res = check(engine, ref, prompt[:20], max_new_tokens=31, block_size=32, sub_block_size=8, threshold=0.9,
                use_block_cache=False, stop_token_id=329)
    assert res.token_ids == [] and res.num_forwards == 0


def test_new_token_count_follows_the_spec(setup):
    """fast_dllm_v2.md 4, fact 8: P0=20, B=32, max_new=96 -> 77 new tokens."""
    engine, _, _ = setup
    res = engine.generate_ids(list(range(20)), max_new_tokens=96, block_size=32, sub_block_size=8, threshold=0.9,
                              stop_token_id=329, length_rule="upstream")
    assert res.finish_reason == "length" and len(res.token_ids) == 77  # these seeds never emit the stop token


def test_batch_rows_equal_single_sequences(setup):
    engine, _, _ = setup
    rng = np.random.default_rng(5)
    prompts = [list(rng.integers(0, MASK, n)) for n in (3, 40, 17, 64)]
    kw = dict(max_new_tokens=48, block_size=16, sub_block_size=4, threshold=0.7, stop_token_id=329)
    batch = engine.generate_ids(prompts, **kw)
    assert len(batch) == 4
    for p, r in zip(prompts, batch):
        single = engine.generate_ids(p, **kw)
        assert r.token_ids == single.token_ids and r.num_forwards == single.num_forwards


def test_sampling_is_seeded(setup):
    engine, _, _ = setup
    kw = dict(max_new_tokens=32, temperature=0.8, top_p=0.9, top_k=50, stop_token_id=329)
    a = engine.generate_ids(list(range(7)), seed=1, **kw).token_ids
    b = engine.generate_ids(list(range(7)), seed=1, **kw).token_ids
    c = engine.generate_ids(list(range(7)), seed=2, **kw).token_ids
    assert a == b and a != c and MASK not in a


RULES = {"entropy_threshold": [1.0, 4.5], "margin_threshold": [0.05, 0.3], "factor": [0.5, 3.0]}


@pytest.mark.parametrize("bs", [(32, 8), (16, 16)], ids=lambda b: f"B{b[0]}S{b[1]}")
@pytest.mark.parametrize("block_cache", [False, True], ids=["nocache", "blockcache"])
@pytest.mark.parametrize("sampler,value", [(s, v) for s, vs in RULES.items() for v in vs])
def test_other_rules_token_exact(setup, bs, block_cache, sampler, value):
    """Fast-dLLM v2 with the entropy, margin and factor rules (from the fused
    lm_head statistics) against the reference computing them from full softmaxes."""
    engine, ref, seed = setup
    B, S = bs
    prompt = (np.arange(9) * (seed + 5)) % 300
    res = engine.generate_ids(list(prompt), length_rule="upstream", max_new_tokens=2 * B, block_size=B,
                              sub_block_size=S, use_block_cache=block_cache, stop_token_id=2, sampler=sampler,
                              **{sampler: value})
    ids, forwards = ref_generate(ref, prompt, 2 * B, block_size=B, small_block_size=S, use_block_cache=block_cache,
                                 mask_id=MASK, stop_token=2, sampler=sampler, rule_param=value)
    assert res.token_ids == ids
    assert res.num_forwards == forwards


def test_rules_differ_from_each_other(setup):
    """The rules are really different rules: on the same prompt they take
    different numbers of forwards at some setting (guards against a policy that
    silently falls back to the threshold)."""
    engine, _, _ = setup
    prompt = list(range(3, 12))
    runs = {s: engine.generate_ids(prompt, max_new_tokens=64, sampler=s, **({s: v[0]} if s in RULES else {}),
                                   stop_token_id=2).num_forwards for s, v in [("threshold", None), *RULES.items()]}
    assert len(set(runs.values())) >= 3, runs
