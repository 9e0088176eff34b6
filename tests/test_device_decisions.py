"""Threshold decisions on the model's device (ops/denoise_rule.h,
runtime/device_decisions.h): the decide op against a numpy statement of the
rule, and the decode loop with its decisions on the device step for step equal
to the host loop (the CPU runs the device path when asked; a GPU by default).
test_generate.py runs its token-exact tests against the reference both ways."""
import numpy as np
import pytest

import fastdllm_rt
from fastdllm_rt import _C

from model_factory import make_config, write_model

ops = _C.ops

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
MASK, STOP = 330, 329
FULL, SUB, NONE, COMMIT, STOPPED = 1, 2, 0, 3, 4
HEADER = ["go", "forwards", "sub_block", "cache_valid", "c", "pb_off", "mask_id", "stop_id",
          "use_block_cache", "threshold", "block", "sub", "pages", "rows_full", "rows_sub"]
TIE = np.float32(1) - np.float32(1e-5)


def make_state(h, blk, table):
    words = np.zeros(len(HEADER) + len(blk) + len(table), np.int32)
    for i, name in enumerate(HEADER):
        words[i] = np.float32(h[name]).view(np.int32) if name == "threshold" else h[name]
    words[len(HEADER):len(HEADER) + len(blk)] = blk
    words[len(HEADER) + len(blk):] = table
    return words


def read_state(words, block):
    h = {name: int(words[i]) for i, name in enumerate(HEADER)}
    t = HEADER.index("threshold")
    h["threshold"] = float(words[t:t + 1].view(np.float32)[0])
    return h, words[len(HEADER):len(HEADER) + block].copy()


def ref_next(blk, h):
    """Spec 4: stop rule (A), commit, else the first sub-block with a mask, by
    the sub-block alone once the block cache holds its first token."""
    for t in blk[h["pb_off"]:]:
        if t == h["stop_id"]:
            return STOPPED, 0
        if t == h["mask_id"]:
            break
    masked = np.flatnonzero(blk == h["mask_id"])
    if len(masked) == 0:
        return COMMIT, 0
    s = int(masked[0]) // h["sub"]
    sub_only = h["use_block_cache"] and h["cache_valid"] and blk[s * h["sub"]] != h["mask_id"]
    return (SUB if sub_only else FULL), s


def ref_step_inputs(h, blk, table, kind):
    B, S, s, c = h["block"], h["sub"], h["sub_block"], h["c"]
    first = 0 if kind == FULL else s * S
    n = B if kind == FULL else S
    rows = h["rows_full"] if kind == FULL else h["rows_sub"]
    tokens = blk[first:first + n]
    positions = c + first + np.arange(n)
    if kind == FULL:
        q = c + np.arange(n)
        limits = np.minimum(c + B, (q // 32 + 1) * 32)
    else:
        limits = np.full(n, c + B)
    js = s * S + np.minimum(np.arange(rows), S - 1)
    out_rows = np.where(js == first, 0, js - first - 1)
    return np.concatenate([tokens, positions, limits, out_rows, table]).astype(np.int32)


def ref_decide(state, index, prob, ran):
    h, blk = read_state(state, state[HEADER.index("block")])
    lo, S = h["sub_block"] * h["sub"], h["sub"]
    pos = [j for j in range(lo, lo + S) if blk[j] == h["mask_id"]]
    tok, conf = [], []
    for j in pos:
        k = 1 if index[j - lo, 0] == h["mask_id"] else 0
        tok.append(int(index[j - lo, k]))
        conf.append(np.float32(prob[j - lo, k]))
    if pos:
        top = max(conf)
        best = next(k for k, c in enumerate(conf) if not c < top * TIE)
        for k, j in enumerate(pos):
            if conf[k] > np.float32(h["threshold"]) or k == best:
                blk[j] = tok[k]
    if ran == FULL and h["use_block_cache"]:
        h["cache_valid"] = 1
    h["forwards"] += 1
    kind, s = ref_next(blk, h)
    if kind in (FULL, SUB):
        h["sub_block"] = s
    h["go"] = kind if kind in (FULL, SUB) else NONE
    table = state[len(HEADER) + h["block"]:]
    return make_state(h, blk, table), kind


@pytest.mark.parametrize("block,sub,rows_full", [(32, 8, 8), (16, 4, 8), (12, 3, 3), (32, 32, 32)])
@pytest.mark.parametrize("use_block_cache", [0, 1])
@pytest.mark.parametrize("device", DEVICES)
def test_decide_op_matches_the_rule(block, sub, rows_full, use_block_cache, device):
    rng = np.random.default_rng(block * 10 + sub + use_block_cache)
    pages = 7
    table = rng.integers(0, 50, pages).astype(np.int32)
    seen = set()
    for trial in range(60):
        blk = rng.choice([MASK, MASK, 5, 17, 40, STOP], block).astype(np.int32)
        if trial % 4 == 1:  # one mask left: the forward finishes the block (commit, or stop)
            blk = rng.choice([5, 17, 40], block).astype(np.int32)
        sb = int(rng.integers(0, block // sub))
        blk[sb * sub + int(rng.integers(0, sub))] = MASK  # the forward's sub-block has a mask
        ran = int(rng.choice([FULL, SUB])) if use_block_cache else FULL
        h = dict(go=ran, forwards=int(rng.integers(0, 5)), sub_block=sb, cache_valid=int(ran == SUB),
                 c=int(rng.integers(0, 4)) * block, pb_off=int(rng.integers(0, block)), mask_id=MASK,
                 stop_id=STOP if trial % 3 else -1, use_block_cache=use_block_cache,
                 threshold=float(rng.choice([0.5, 0.9, 1.0])), block=block, sub=sub, pages=pages,
                 rows_full=rows_full, rows_sub=sub)
        state = make_state(h, blk, table)
        rows = rows_full if ran == FULL else sub
        index = rng.integers(0, 60, (rows, 2)).astype(np.int32)
        index[rng.random(rows) < 0.2, 0] = MASK  # the mask token on top: its fallback is slot 1
        prob = rng.choice([0.95, 0.6, 0.6, 0.3], (rows, 2)).astype(np.float32)  # ties
        if trial % 5 == 0:
            prob[:, 0] = np.float32(0.5) * (1 + np.float32(3e-6) * rng.integers(0, 3, rows))  # within kTieRel
        staging_len = max(3 * block + rows_full, 3 * sub + sub) + pages + 3
        got_state, got_staging = ops.denoise_decide(state, index, prob, staging_len,
                                                    (block, sub, pages, rows_full, sub), ran, device=device)
        want_state, kind = ref_decide(state, index, prob, ran)
        go = kind if kind in (FULL, SUB) else NONE
        np.testing.assert_array_equal(got_state, want_state)
        want_staging = np.full(staging_len, -7, np.int32)
        if go != NONE:
            h2, blk2 = read_state(want_state, block)
            seq = ref_step_inputs(h2, blk2, table, go)
            want_staging[:len(seq)] = seq
        np.testing.assert_array_equal(got_staging, want_staging)
        seen.add(kind)
    assert {FULL, COMMIT, STOPPED} <= seen  # the cases were reached


def test_decide_op_rejects_bad_arguments():
    state = make_state(dict(go=1, forwards=0, sub_block=0, cache_valid=0, c=0, pb_off=0, mask_id=MASK,
                            stop_id=-1, use_block_cache=0, threshold=0.9, block=8, sub=4, pages=2,
                            rows_full=4, rows_sub=4), np.full(8, MASK, np.int32), np.zeros(2, np.int32))
    idx, prob = np.zeros((4, 2), np.int32), np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="ran must be"):
        ops.denoise_decide(state, idx, prob, 64, (8, 4, 2, 4, 4), 3)
    with pytest.raises(ValueError, match="state must hold"):
        ops.denoise_decide(state[:-1], idx, prob, 64, (8, 4, 2, 4, 4), 1)
    with pytest.raises(ValueError, match="staging must hold"):
        ops.denoise_decide(state, idx, prob, 10, (8, 4, 2, 4, 4), 1)
    with pytest.raises(ValueError, match="does not match"):
        ops.denoise_decide(state, idx, prob, 64, (8, 2, 2, 4, 4), 1)
    with pytest.raises(ValueError, match="index and prob"):
        ops.denoise_decide(state, idx[:3], prob[:3], 64, (8, 4, 2, 4, 4), 1)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    cfg = make_config()
    return fastdllm_rt.Engine(write_model(str(tmp_path_factory.mktemp("dd")), cfg, seed=7))


def params(device_decisions, **kw):
    p = _C.GenerationParams()
    p.mask_id, p.stop_id, p.device_decisions = MASK, STOP, device_decisions
    for k, v in kw.items():
        setattr(p, k, v)
    return p


@pytest.mark.parametrize("bs", [(32, 8), (16, 4), (32, 32)], ids=lambda b: f"B{b[0]}S{b[1]}")
@pytest.mark.parametrize("block_cache", [False, True], ids=["nocache", "blockcache"])
@pytest.mark.parametrize("threshold", [0.3, 0.9])
def test_steps_equal_the_host_loop(engine, bs, block_cache, threshold):
    """Every step() is one forward either way, and the tokens after it are the
    same: speculative launches the device skipped are invisible."""
    rng = np.random.default_rng(bs[0] + bs[1])
    for plen in (5, bs[0], 45):
        prompt = rng.integers(0, MASK, plen).tolist()
        kw = dict(max_new_tokens=3 * bs[0] + 5, block_size=bs[0], sub_block_size=bs[1], threshold=threshold,
                  use_block_cache=block_cache)
        host = _C.Generation(engine.model, engine.pool, prompt, params(0, **kw))
        dev = _C.Generation(engine.model, engine.pool, prompt, params(1, **kw))
        assert not host.decisions_on_device and dev.decisions_on_device
        steps = 0
        while True:
            a, b = host.step(), dev.step()
            assert a == b
            if not a:
                break
            steps += 1
            assert dev.tokens == host.tokens and dev.last_step == host.last_step, steps
            assert dev.num_forwards == host.num_forwards == steps
        assert dev.output == host.output and dev.finish_reason == host.finish_reason


def test_interleaved_generations_share_the_model(engine):
    """Two device-decision generations stepped alternately on one model: each
    puts its own state on the device when it takes it back."""
    prompts = [list(range(3, 40)), list(range(100, 107))]
    kw = dict(max_new_tokens=64, block_size=16, sub_block_size=4, threshold=0.5, use_block_cache=True)
    alone = []
    for p in prompts:
        g = _C.Generation(engine.model, engine.pool, p, params(1, **kw))
        g.run()
        alone.append((g.output, g.num_forwards))
    gens = [_C.Generation(engine.model, engine.pool, p, params(1, **kw)) for p in prompts]
    live = list(gens)
    while live:
        live = [g for g in live if g.step()]
    assert [(g.output, g.num_forwards) for g in gens] == alone


@pytest.mark.parametrize("device_decisions", [0, 1])
def test_abandoned_generation_returns_its_pages(engine, device_decisions):
    before = engine.pool.pages_in_use
    g = _C.Generation(engine.model, engine.pool, list(range(40)),
                      params(device_decisions, max_new_tokens=128, block_size=16, sub_block_size=4, threshold=0.95))
    for _ in range(5):
        assert g.step()
    assert engine.pool.pages_in_use > before
    del g
    assert engine.pool.pages_in_use == before


def test_device_decisions_setting(engine, monkeypatch):
    greedy = dict(max_new_tokens=32)
    monkeypatch.delenv("FASTDLLM_DEVICE_DECISIONS", raising=False)
    # auto: the host's on the CPU; FASTDLLM_DEVICE_DECISIONS=1 asks for the device path, not for sampling
    assert not _C.Generation(engine.model, engine.pool, [1, 2], params(-1, **greedy)).decisions_on_device
    monkeypatch.setenv("FASTDLLM_DEVICE_DECISIONS", "1")
    assert _C.Generation(engine.model, engine.pool, [1, 2], params(-1, **greedy)).decisions_on_device
    assert not _C.Generation(engine.model, engine.pool, [1, 2],
                             params(-1, temperature=0.7, **greedy)).decisions_on_device
    with pytest.raises(ValueError, match="device_decisions=1 needs greedy"):
        _C.Generation(engine.model, engine.pool, [1, 2], params(1, temperature=0.7))
    with pytest.raises(ValueError, match="device_decisions must be"):
        _C.Generation(engine.model, engine.pool, [1, 2], params(2))
