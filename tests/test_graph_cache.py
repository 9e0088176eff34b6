"""The CUDA-graph cache's policy (model/graph_cache.h) over a fake backend:
keys are (token bucket, sequence bucket, greedy rows) of a replayable plan."""
from fastdllm_rt._C import _testing as T


def test_first_eager_then_captured_then_replayed():
    g = T.GraphCacheProbe(4)
    assert g.run(32, 2, 8) == "eager"
    assert g.run(32, 2, 8) == "captured"
    for _ in range(3):
        assert g.run(32, 2, 8) == "replayed"
    # the body ran eagerly once and once under capture; every later step is a launch only
    assert g.counts == {"captures": 1, "launches": 4, "destroys": 0, "body_runs": 2}


def test_every_key_field_separates_graphs():
    g = T.GraphCacheProbe(16)
    keys = [(32, 2, 8), (8, 2, 8), (32, 4, 8), (32, 2, 16)]
    for k in keys:
        assert g.run(*k) == "eager"
    for k in keys:
        assert g.run(*k) == "captured"
    assert g.size == len(keys)
    for k in keys:
        assert g.run(*k) == "replayed"


def test_new_epoch_drops_all_graphs():
    g = T.GraphCacheProbe(4)
    g.run(8, 2, 4, epoch=0)
    g.run(8, 2, 4, epoch=0)
    assert g.size == 1
    # a buffer moved: the old graph points at freed memory and must not be launched
    assert g.run(8, 2, 4, epoch=1) == "eager"
    assert g.size == 0 and g.counts["destroys"] == 1
    assert g.run(8, 2, 4, epoch=1) == "captured"


def test_least_recently_used_graph_is_evicted():
    g = T.GraphCacheProbe(2)
    for n in (8, 16, 24):
        g.run(n, 1, 1)
        g.run(n, 1, 1)  # captured; the third capture evicts n=8
    assert g.size == 2 and g.counts["destroys"] == 1
    assert g.run(24, 1, 1) == "replayed"
    assert g.run(16, 1, 1) == "replayed"
    assert g.run(8, 1, 1) == "captured"  # seen before: captured again straight away
    assert g.counts["destroys"] == 2
