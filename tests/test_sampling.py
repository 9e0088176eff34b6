"""Sampling's vocabulary reduction (ops.sampling_candidates) and the draw from
its candidates (runtime/sampling.h) against a numpy reference of the rule in
fast_dllm_v2.md 4.6: softmax(logits / T), top-k, nucleus, renormalised."""
import numpy as np
import pytest

from fastdllm_rt._C import _testing as T

ops = T.ops
RNG = np.random.default_rng(77)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def reference(row, temperature, top_p, top_k, exclude=-1):
    """(tokens of the nucleus in draw order, their renormalised probabilities)."""
    logits = row.astype(np.float64)
    if exclude >= 0:
        logits[exclude] = -np.inf
    p = np.exp((logits - logits.max()) / temperature)
    p /= p.sum()
    order = np.lexsort((np.arange(len(p)), -p))  # probability descending, ties by token id
    if exclude >= 0:
        order = order[order != exclude]
    keep = order[:top_k] if top_k > 0 else order
    kept = p[keep].sum()
    cum = np.cumsum(p[keep] / kept)
    past = np.nonzero(cum > top_p)[0]  # the first one past top_p is kept, then stop
    nucleus = keep[:past[0] + 1 if len(past) else len(keep)].tolist()
    return nucleus, p[nucleus] / p[nucleus].sum()


def logits_row(vocab, kind):
    if kind == "peaked":  # a trained model's shape: a few likely tokens, a long flat tail
        row = RNG.standard_normal(vocab).astype(np.float32) * 2
        row[RNG.choice(vocab, min(5, vocab), replace=False)] += 12
        return row
    if kind == "ties":
        return np.round(RNG.standard_normal(vocab) * 2).astype(np.float32)
    return RNG.standard_normal(vocab).astype(np.float32)


SETTINGS = [(1.0, 1.0, 0), (0.7, 0.9, 0), (1.3, 0.5, 0), (0.3, 0.95, 0), (1.0, 1.0, 1), (0.8, 1.0, 5),
            (1.0, 0.9, 50), (2.5, 0.3, 7)]


@pytest.mark.parametrize("vocab", [7, 37, 1000, 151936])
@pytest.mark.parametrize("kind", ["normal", "peaked", "ties"])
@pytest.mark.parametrize("temperature,top_p,top_k", SETTINGS)
@pytest.mark.parametrize("device", DEVICES)
def test_candidates_hold_the_nucleus(vocab, kind, temperature, top_p, top_k, device):
    rows = 3
    logits = np.stack([logits_row(vocab, kind) for _ in range(rows)])
    exclude = vocab // 2
    stats, count, cand = ops.sampling_candidates(logits, temperature, top_p, top_k, exclude, device=device)
    for r in range(rows):
        row = logits[r]
        others = np.delete(row, exclude)
        assert stats[r, 0] == others.max()
        denom = np.exp((others.astype(np.float64) - others.max()) / temperature).sum()
        np.testing.assert_allclose(stats[r, 1], denom, rtol=1e-5)
        toks = cand[r, :count[r], 0]
        assert len(set(toks.tolist())) == count[r] and exclude not in toks
        np.testing.assert_array_equal(cand[r, :count[r], 1].view(np.float32), row[toks])  # the logits, bit for bit
        rest = np.setdiff1d(np.delete(np.arange(vocab), exclude), toks)
        if len(rest):  # a cut by value: every candidate above every other token, ties never split
            assert row[toks].min() > row[rest].max()
        nucleus, _ = reference(row, temperature, top_p, top_k, exclude)
        assert set(nucleus) <= set(toks.tolist())
        # ... and not more than the rule asks: the bins before the last one fall short of it
        inv_t = np.float32(1.0) / np.float32(temperature)
        bins = np.minimum(((np.float32(others.max()) - row[toks]) * inv_t) * np.float32(64), 2047).astype(np.int64)
        inner = toks[bins < bins.max()]
        if top_k > 0:
            assert len(inner) < top_k
        elif top_p < 1:
            inner_mass = np.exp((row[inner].astype(np.float64) - others.max()) / temperature).sum()
            assert inner_mass <= top_p * denom * (1 + 1e-3) * (1 + 1e-5)


@pytest.mark.parametrize("temperature,top_p,top_k", [(0.8, 0.9, 0), (1.0, 1.0, 0), (1.5, 1.0, 6), (0.5, 0.6, 20)])
@pytest.mark.parametrize("device", DEVICES)
def test_draws_follow_the_nucleus_distribution(temperature, top_p, top_k, device):
    vocab, draws = 40, 6000
    row = logits_row(vocab, "normal") * 1.5
    tokens, probs = ops.sample(np.tile(row, (draws, 1)), temperature, top_p, top_k, exclude=3, seed=11, device=device)
    nucleus, q = reference(row, temperature, top_p, top_k, exclude=3)
    assert set(tokens.tolist()) <= set(nucleus)
    want = dict(zip(nucleus, q))
    np.testing.assert_allclose(probs, [want[t] for t in tokens], rtol=1e-5)  # the confidence: renormalised prob
    freq = np.bincount(tokens, minlength=vocab)[nucleus] / draws
    sigma = np.sqrt(q * (1 - q) / draws)
    assert np.all(np.abs(freq - q) <= 5 * sigma + 1e-9), (freq, q)


def test_draws_are_seeded():
    logits = np.stack([logits_row(500, "normal") for _ in range(8)])
    a = ops.sample(logits, 1.0, 0.9, 0, seed=1)[0]
    assert np.array_equal(a, ops.sample(logits, 1.0, 0.9, 0, seed=1)[0])
    assert not np.array_equal(a, ops.sample(logits, 1.0, 0.9, 0, seed=2)[0])


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_one_is_the_argmax(device):
    logits = np.stack([logits_row(1000, "normal") for _ in range(5)])
    tokens, probs = ops.sample(logits, 0.7, 1.0, 1, seed=3, device=device)
    np.testing.assert_array_equal(tokens, logits.argmax(1))
    np.testing.assert_array_equal(probs, 1.0)


@pytest.mark.parametrize("kw,msg", [(dict(temperature=0.0), "temperature must be > 0"),
                                    (dict(temperature=1.0, top_p=0.0), "top_p must be in"),
                                    (dict(temperature=1.0, top_k=-2), "top_k must be >= 0"),
                                    (dict(temperature=1.0, exclude=50), "exclude 50 is outside")])
def test_bad_options_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ops.sampling_candidates(np.zeros((2, 50), np.float32), **kw)


@pytest.mark.parametrize("fill,start", [(np.inf, 4), (np.nan, 4), (-np.inf, 0)])
@pytest.mark.parametrize("device", DEVICES)
def test_non_finite_logits_raise(fill, start, device):
    logits = np.zeros((2, 30), np.float32)
    logits[1, start:] = fill
    with pytest.raises(RuntimeError, match="not finite"):
        ops.sample(logits, 1.0, seed=0, device=device)


def test_minus_inf_logits_are_never_drawn():
    logits = np.zeros((500, 30), np.float32)
    logits[:, 4:] = -np.inf
    tokens, probs = ops.sample(logits, 1.0, seed=0)
    assert set(tokens.tolist()) == {0, 1, 2, 3}
    np.testing.assert_allclose(probs, 0.25)
