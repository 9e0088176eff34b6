"""Continuous batching (runtime/scheduler.h): sequences in different phases,
with different block / sub-block sizes, thresholds, block-cache settings,
sampling parameters and stop tokens share forwards, and every row's ids and
forward count equal its single-sequence run and the PyTorch reference of the
spec. Sequences join and leave mid-batch; the prefix cache changes nothing but
the work done; the KV budget makes requests wait, never fail mid-run."""
import numpy as np
import pytest

import fastdllm_rt
from fastdllm_rt import _C
from fastdllm_rt._C import _testing as T
from model_factory import load_weights, make_config, write_model
from ref_generate import ref_generate
from reference import RefQwen2

MASK, STOP = 330, 329


@pytest.fixture(scope="module", params=[3, 11])
def setup(request, tmp_path_factory):
    cfg = make_config(tie_word_embeddings=request.param == 11)
    path = write_model(str(tmp_path_factory.mktemp("batch")), cfg, seed=request.param)
    return fastdllm_rt.load_model(path), RefQwen2(cfg, load_weights(path)), request.param


def params(max_new_tokens=48, block_size=32, sub_block_size=8, threshold=0.9, use_block_cache=False, stop=STOP,
           temperature=0.0, top_p=1.0, top_k=0, seed=0, length_rule="upstream"):
    """The official loop's length rule, so that rows compare with the spec's reference."""
    p = _C.GenerationParams()
    p.length_rule = length_rule
    p.max_new_tokens, p.block_size, p.sub_block_size, p.threshold = max_new_tokens, block_size, sub_block_size, threshold
    p.use_block_cache, p.mask_id, p.stop_id = use_block_cache, MASK, stop
    p.temperature, p.top_p, p.top_k, p.seed = temperature, top_p, top_k, seed
    return p


def run(model, requests, prefix_cache=True, max_batch_size=16, max_batch_tokens=4096, max_pages=512):
    """requests: [(step at which it joins, prompt, params)]. Steps a scheduler
    by hand to the end; returns ({index: (ids, forwards, reason)}, stats)."""
    s = T.Scheduler(model, page_size=16, max_pages=max_pages, prefix_cache=prefix_cache,
                    max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens)
    ids, out, step = {}, {}, 0
    while len(out) < len(requests):
        for i, (at, prompt, p) in enumerate(requests):
            if at == step:
                ids[s.add([int(t) for t in prompt], p)] = i
        r = s.step()
        assert not r["failed"], r["failed"]
        for sid, res in r["finished"].items():
            out[ids[sid]] = res
        step += 1
        assert step < 5000
    st = s.stats()
    assert st["pages_in_use"] == 0 and st["pages_reserved"] == 0
    return out, st


_REFERENCE = {}  # the PyTorch reference per (model seed, prompt, settings): it knows no ISA nor prefix cache


def assert_match_reference(setup, rows, out):
    """Every row's ids and forward count equal the spec's PyTorch reference."""
    _, ref, seed = setup
    for i, (prompt, p) in enumerate(rows):
        key = (seed, tuple(int(t) for t in prompt), p.max_new_tokens, p.block_size, p.sub_block_size, p.threshold,
               p.use_block_cache, p.stop_id)
        if key not in _REFERENCE:
            _REFERENCE[key] = ref_generate(ref, prompt, p.max_new_tokens, block_size=p.block_size,
                                           small_block_size=p.sub_block_size, threshold=p.threshold,
                                           use_block_cache=p.use_block_cache, mask_id=MASK, stop_token=p.stop_id)
        ids, forwards = _REFERENCE[key]
        assert (list(out[i][0]), out[i][1]) == (ids, forwards), i


def mixed_requests(seed):
    """Rows that differ in every way a request can: prompt lengths below,
    equal to, above and a multiple of B; B/S 32/8, 16/4, 64/16, 32/32;
    thresholds; the block cache; stop tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for plen, (B, S), thr, cache in [(5, (32, 8), 0.9, False), (32, (32, 8), 0.5, True), (41, (16, 4), 1.0, False),
                                     (64, (64, 16), 0.7, True), (23, (32, 32), 0.9, False), (97, (16, 4), 0.5, True),
                                     (16, (16, 4), 0.9, True), (70, (32, 8), 1.0, True)]:
        rows.append((rng.integers(0, MASK, plen), params(max_new_tokens=2 * B + 7, block_size=B, sub_block_size=S,
                                                         threshold=thr, use_block_cache=cache)))
    return rows


@pytest.mark.parametrize("prefix_cache", [True, False], ids=["prefix_cache", "no_prefix_cache"])
def test_mixed_batch_equals_single_runs_and_reference(setup, isa, prefix_cache):
    model, _, seed = setup
    rows = mixed_requests(seed)
    batched, st = run(model, [(0, p, q) for p, q in rows], prefix_cache=prefix_cache)
    # forwards were shared: fewer model forwards than sequence forwards, batches of several
    assert st["model_forwards"] < st["sequence_forwards"] and max(st["batch_size_histogram"]) >= 4
    for i, (prompt, p) in enumerate(rows):
        alone, _ = run(model, [(0, prompt, p)], prefix_cache=prefix_cache)
        assert batched[i] == alone[0], i
    assert_match_reference(setup, rows, batched)


def test_stop_token_mid_block_in_a_batch(setup):
    """A row whose stop token comes mid-block leaves the batch at once (no
    commit forward); the others go on unchanged."""
    model, _, seed = setup
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, MASK, 21)
    free, _ = run(model, [(0, prompt, params(max_new_tokens=96, use_block_cache=True))])
    stop = int(free[0][0][11 + 14])  # first produced in the middle of the second block
    rows = [(prompt, params(max_new_tokens=96, stop=stop, use_block_cache=True)),
            (rng.integers(0, MASK, 40), params(max_new_tokens=64)),
            (rng.integers(0, MASK, 9), params(max_new_tokens=64, block_size=16, sub_block_size=4, stop=stop))]
    batched, _ = run(model, [(0, p, q) for p, q in rows])
    assert batched[0][2] == "stop" and batched[0][0][-1] == stop and len(batched[0][0]) <= 26
    assert_match_reference(setup, rows, batched)


def test_sequences_join_and_leave_mid_batch(setup, isa):
    model, _, seed = setup
    rows = mixed_requests(seed + 1)
    joins = [0, 0, 3, 3, 7, 12, 30, 31]
    batched, st = run(model, [(at, p, q) for at, (p, q) in zip(joins, rows)], max_batch_size=3)
    assert max(st["batch_size_histogram"]) == 3  # more requests than slots: the rest waited
    assert_match_reference(setup, rows, batched)


def test_seeded_sampling_draws_the_same_batched_or_alone(setup):
    model, _, seed = setup
    rng = np.random.default_rng(seed)
    rows = [(rng.integers(0, MASK, n), params(max_new_tokens=64, temperature=t, top_p=tp, top_k=k, seed=s))
            for n, t, tp, k, s in [(7, 0.8, 0.9, 50, 1), (40, 1.3, 1.0, 0, 2), (33, 0.5, 0.95, 7, 3)]]
    rows.append((rng.integers(0, MASK, 12), params(max_new_tokens=64)))  # a greedy row in the same forwards
    batched, _ = run(model, [(0, p, q) for p, q in rows])
    for i, (prompt, p) in enumerate(rows):
        alone, _ = run(model, [(0, prompt, p)])
        assert batched[i] == alone[0], i
        assert MASK not in batched[i][0]
    again, _ = run(model, [(0, p, q) for p, q in rows[1:2]])
    other = params(max_new_tokens=64, temperature=1.3, seed=9)
    assert again[0] == batched[1] and run(model, [(0, rows[1][0], other)])[0][0] != batched[1]


def test_long_prompts_prefill_in_chunks(setup):
    """max_batch_tokens smaller than a prompt: the block-causal prefill runs in
    chunks of whole blocks beside the other rows' steps, with the same output
    and the spec's forward count (the prefill counts once)."""
    model, _, seed = setup
    rng = np.random.default_rng(seed)
    rows = [(rng.integers(0, MASK, 200), params(max_new_tokens=40)),
            (rng.integers(0, MASK, 130), params(max_new_tokens=40, block_size=16, sub_block_size=4)),
            (rng.integers(0, MASK, 20), params(max_new_tokens=64))]
    batched, st = run(model, [(0, p, q) for p, q in rows], max_batch_tokens=64)
    assert st["batch_tokens"] <= 64 * st["model_forwards"]
    assert_match_reference(setup, rows, batched)


def test_prefix_cache_shares_blocks_and_changes_nothing(setup):
    model, _, seed = setup
    rng = np.random.default_rng(seed)
    system = list(rng.integers(0, MASK, 64))  # a shared 64-token prefix (two 32-blocks)
    rows = [(system + list(rng.integers(0, MASK, n)), params(max_new_tokens=40)) for n in (5, 30, 33, 0)]
    rows.append((system[:40], params(max_new_tokens=40, block_size=16, sub_block_size=4)))  # same tokens, other B
    rows.append(rows[3])  # the prompt that is exactly the prefix, again
    on, st_on = run(model, [(i, p, q) for i, (p, q) in enumerate(rows)], prefix_cache=True)
    off, st_off = run(model, [(i, p, q) for i, (p, q) in enumerate(rows)], prefix_cache=False)
    assert on == off
    assert st_off["prefix_cache_hit_tokens"] == 0
    # rows 1-3 join after row 0 has prefilled the prefix: 64 tokens each, but row 3
    # (exactly the prefix) needs the prefix's next token, which row 0's prefill did
    # not compute: it recomputes the last block (32 hit tokens). The B=16 row shares
    # nothing (other blocks). Row 5 repeats row 3: all 64 tokens and the next token
    # come from the cache, and its prefill runs no forward.
    assert st_on["prefix_cache_hit_tokens"] == 64 + 64 + 32 + 0 + 64
    assert st_on["model_forwards"] < st_off["model_forwards"]
    assert_match_reference(setup, rows, on)


def test_prefix_cache_evicts_when_pages_are_needed(setup):
    """A pool too small to keep every finished request's blocks: old entries are
    evicted least-recently-used, nothing fails, and outputs stay exact."""
    model, _, seed = setup
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, MASK, 70) for _ in range(6)]
    rows = [(p, params(max_new_tokens=32)) for p in prompts] + [(prompts[5], params(max_new_tokens=32))]
    # each needs 2 prompt + 2 generated blocks of 2 pages: 8 pages; 12 pages hold one running request + a little cache
    out, st = run(model, [(3 * i, p, q) for i, (p, q) in enumerate(rows)], max_pages=12, max_batch_size=1)
    assert st["pages_cached"] <= 12 and st["prefix_cache_hit_tokens"] >= 64  # the repeated prompt hit
    assert_match_reference(setup, rows, out)


def test_requests_wait_for_pages_instead_of_failing(setup):
    model, _, seed = setup
    rng = np.random.default_rng(seed)
    rows = [(rng.integers(0, MASK, 40), params(max_new_tokens=64)) for _ in range(3)]
    # each needs up to 2 + 4 = 6 pages; 13 pages run two at a time, the third waits
    out, st = run(model, [(0, p, q) for p, q in rows], max_pages=13, prefix_cache=False)
    assert max(st["batch_size_histogram"]) == 2
    assert_match_reference(setup, rows, out)


def test_scheduler_rejects_what_can_never_run(setup):
    model, _, _ = setup
    s = T.Scheduler(model, page_size=16, max_pages=4, max_batch_tokens=16)
    with pytest.raises(fastdllm_rt.MemoryBudgetError, match="this request needs up to 8 pages"):
        s.add(list(range(5)), params(max_new_tokens=128, block_size=16, sub_block_size=4))
    with pytest.raises(ValueError, match=r"block_size \(32\) exceeds the engine's max_batch_tokens \(16\)"):
        s.add(list(range(5)), params(max_new_tokens=32))
    with pytest.raises(ValueError, match="stop_token_id and mask_token_id are both 330"):
        s.add(list(range(5)), params(max_new_tokens=32, block_size=16, sub_block_size=4, stop=MASK))
    assert s.idle and s.stats()["pages_in_use"] == 0


def test_cancel_frees_pages_at_once(setup):
    model, _, _ = setup
    s = T.Scheduler(model, page_size=16, max_pages=64, prefix_cache=False)
    a = s.add(list(range(40)), params(max_new_tokens=96))
    b = s.add(list(range(50, 90)), params(max_new_tokens=96))
    for _ in range(3):
        s.step()
    assert s.stats()["pages_in_use"] > 0
    assert s.cancel(a) and s.cancel(b) and not s.cancel(a)
    st = s.stats()
    assert st["pages_in_use"] == 0 and st["pages_reserved"] == 0 and st["requests_cancelled"] == 2
