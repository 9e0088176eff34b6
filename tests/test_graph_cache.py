"""The CUDA-graph cache's policy (runtime/graph_cache.h) over a fake backend,
and the graph-ready step layout the CPU forward shares with the GPU one."""
import numpy as np
import pytest

from fastdllm_rt import _C


def test_first_eager_then_captured_then_replayed():
    g = _C.GraphCacheProbe(4)
    assert g.run(32, 8, True, 40) == "eager"
    assert g.run(32, 8, True, 40) == "captured"
    for _ in range(3):
        assert g.run(32, 8, True, 40) == "replayed"
    c = g.counts
    # the body ran eagerly once and once under capture; every later step is a launch only
    assert c == {"captures": 1, "guarded_captures": 0, "launches": 4, "destroys": 0, "body_runs": 2}


def test_guarded_keys_are_captured_guarded_and_replay_only_once_captured():
    """Device decisions' speculative launches (runtime/device_decisions.h) only
    replay: before a key's guarded graph exists, replay() launches nothing."""
    g = _C.GraphCacheProbe(4)
    assert g.replay(32, 8, 40) is False
    assert g.run(32, 8, True, 40, guarded=True) == "eager"
    assert g.replay(32, 8, 40) is False  # seen, not captured: no eager run behind the host's back
    assert g.run(32, 8, True, 40, guarded=True) == "captured"
    assert g.replay(32, 8, 40) is True
    assert g.replay(32, 8, 40, epoch=1) is False  # buffers moved: the graph may point at freed memory
    c = g.counts
    assert c == {"captures": 0, "guarded_captures": 1, "launches": 2, "destroys": 0, "body_runs": 2}
    # the guarded key is not the plain top-2 key of the same shape
    assert g.run(32, 8, True, 40) == "eager"


def test_every_key_field_separates_graphs():
    g = _C.GraphCacheProbe(16)
    keys = [(32, 8, True, 40), (8, 8, True, 40), (32, 7, True, 40), (32, 8, False, 40), (32, 8, True, 41)]
    for k in keys:
        assert g.run(*k) == "eager"
    for k in keys:
        assert g.run(*k) == "captured"
    assert g.size == len(keys)
    for k in keys:
        assert g.run(*k) == "replayed"


def test_new_epoch_drops_all_graphs():
    g = _C.GraphCacheProbe(4)
    g.run(8, 4, True, 10, epoch=0)
    g.run(8, 4, True, 10, epoch=0)
    assert g.size == 1
    # a buffer moved: the old graph points at freed memory and must not be launched
    assert g.run(8, 4, True, 10, epoch=1) == "eager"
    assert g.size == 0 and g.counts["destroys"] == 1
    assert g.run(8, 4, True, 10, epoch=1) == "captured"


def test_least_recently_used_graph_is_evicted():
    g = _C.GraphCacheProbe(2)
    for n in (1, 2, 3):
        g.run(n, 1, True, 4)
        g.run(n, 1, True, 4)  # captured; the third capture evicts n=1
    assert g.size == 2 and g.counts["destroys"] == 1
    assert g.run(3, 1, True, 4) == "replayed"
    assert g.run(2, 1, True, 4) == "replayed"
    assert g.run(1, 1, True, 4) == "captured"  # seen before: captured again straight away
    assert g.counts["destroys"] == 2


def test_slots_from_positions_matches_explicit_start(isa):
    """qkv_rope_append with start = -1 writes token t at cache slot positions[t]."""
    heads, kv_heads, hd, page = 4, 2, 8, 4
    rng = np.random.default_rng(7)
    qkv = rng.standard_normal((5, (heads + 2 * kv_heads) * hd)).astype(np.float32)
    inv = (1.0 / 10000 ** (np.arange(0, hd, 2) / hd)).astype(np.float32)
    pos = np.arange(9, 14, dtype=np.int32)
    outs = []
    for start in (9, -1):
        pool = _C.PagePool(1, kv_heads, hd, page, 8)
        pt = _C.PageTable(pool)
        pt.reserve_tokens(14)
        table = list(pt.pages)[::-1]  # pages out of order
        z = np.zeros((14, kv_heads, hd), np.float32)
        _C.ops.paged_attention(np.zeros((1, heads, hd), np.float32), z, z, pool, table, 0.1)  # zero every token
        q = _C.ops.qkv_rope_append(qkv, pos, inv, heads, pool, table, start)
        att = _C.ops.attend(q, pool, table, 14, 1.0 / np.sqrt(hd))
        outs.append((q, att))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    pool = _C.PagePool(1, kv_heads, hd, page, 8)
    pt = _C.PageTable(pool)
    pt.reserve_tokens(8)
    table = list(pt.pages)
    with pytest.raises(ValueError, match="position 9 at index 0 is outside the 8 tokens"):
        _C.ops.qkv_rope_append(qkv, pos, inv, heads, pool, table, -1)
