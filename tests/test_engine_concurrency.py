"""The Engine from many callers at once: threads and asyncio tasks streaming
together share forwards and each get exactly their single-request text;
abandoned streams free their pages at once; no mix of half-read streams and
other calls can deadlock; a bad request fails alone."""
import asyncio
import gc
import threading
import time

import pytest

import fastdllm_rt

GEN = dict(max_new_tokens=64, threshold=0.7)
PROMPTS = ["Hello there", "Why is the sky blue?", "Ünïcödé 🙂", "2 + 2 =", "a", "The quick brown fox"]


@pytest.fixture(scope="module")
def engine(demo_dir):
    e = fastdllm_rt.Engine(demo_dir, max_batch_size=8)
    yield e
    e.close()


@pytest.fixture(scope="module")
def singles(engine):
    """Each prompt alone (its own settings), for comparison."""
    return {(p, i): engine.generate([p], **settings(i))[0] for i, p in enumerate(PROMPTS)}


def settings(i):
    """Different settings per request: they share forwards anyway."""
    return [dict(GEN), dict(GEN, threshold=0.9, use_block_cache=True), dict(GEN, block_size=16, sub_block_size=4),
            dict(GEN, threshold=1.0), dict(GEN, temperature=0.8, seed=5), dict(GEN, sub_block_size=16)][i % 6]


def in_thread(fn, timeout=120):
    """Runs fn in a thread; fails (instead of hanging the suite) if it does not finish."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{fn} did not finish within {timeout} s (deadlock?)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def wait_for_pages_free(engine, timeout=10.0):
    end = time.time() + timeout
    while engine.stats()["pages_in_use"] and time.time() < end:
        time.sleep(0.01)
    return engine.stats()["pages_in_use"]


def test_threads_streaming_at_once_get_their_single_text(engine, singles):
    before = engine.stats()
    barrier = threading.Barrier(len(PROMPTS))
    got = {}

    def client(i, p):
        barrier.wait()
        s = engine.stream(p, **settings(i))
        got[(p, i)] = ("".join(s), s.result)

    threads = [threading.Thread(target=client, args=(i, p)) for i, p in enumerate(PROMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    for key, single in singles.items():
        text, res = got[key]
        assert text == single.text and res.token_ids == single.token_ids and res.num_forwards == single.num_forwards
    after = engine.stats()
    model_f = after["model_forwards"] - before["model_forwards"]
    seq_f = after["sequence_forwards"] - before["sequence_forwards"]
    assert model_f < seq_f  # forwards were shared
    assert after["pages_in_use"] == 0


def test_generate_list_is_one_continuous_batch(demo_dir):
    with fastdllm_rt.Engine(demo_dir, max_batch_size=2) as e:
        prompts = PROMPTS[:5]
        res = e.generate(prompts, **GEN)
        st = e.stats()
        assert max(st["batch_size_histogram"]) == 2 and st["requests_finished"] == 5
        assert sum(st["batch_size_histogram"].values()) == st["model_forwards"]
        for p, r in zip(prompts, res):
            single = e.generate([p], **GEN)[0]
            assert r.token_ids == single.token_ids and r.num_forwards == single.num_forwards
        ids = [e.encode_prompt(p) for p in prompts]
        rid = e.generate_ids(ids, **GEN)
        assert [r.token_ids for r in rid] == [r.token_ids for r in res] and rid[0].text is None


def test_abandoned_streams_free_their_pages(engine):
    s = engine.stream("Hello there", max_new_tokens=256, threshold=1.0)
    next(s)
    assert engine.stats()["pages_in_use"] > 0
    s.close()  # returns once the pages are free
    assert engine.stats()["pages_in_use"] == 0
    for _ in engine.stream("Hello there", max_new_tokens=256, threshold=1.0):
        break  # leaving the loop drops the last reference: the stream is cancelled
    gc.collect()
    assert wait_for_pages_free(engine) == 0
    # long enough to be still running after its first delta, whatever the decode order
    s = engine.stream("Why?", max_new_tokens=2048, threshold=1.0)
    next(s)
    assert engine.stats()["requests_running"] == 1
    cycle = [s]
    cycle.append(cycle)  # kept alive by a reference cycle until the collector runs
    del s, cycle
    gc.collect()
    assert wait_for_pages_free(engine) == 0
    end = time.time() + 10  # the stats the loop publishes after its last cancellation
    while engine.stats()["requests_cancelled"] < 3 and time.time() < end:
        time.sleep(0.01)
    st = engine.stats()
    assert st["requests_running"] == 0 and st["requests_cancelled"] >= 3, st


def test_half_read_streams_and_other_calls_make_progress(engine, singles):
    """The mixes that deadlocked with a per-engine lock held across yields."""
    def scenario():
        g = engine.stream(PROMPTS[0], **settings(0))
        first = next(g)
        res = engine.generate([PROMPTS[1]], **settings(1))[0]  # while g is half read
        assert res.token_ids == singles[(PROMPTS[1], 1)].token_ids
        a, b = engine.stream(PROMPTS[2], **settings(2)), engine.stream(PROMPTS[3], **settings(3))
        ta, tb = [], []
        while True:  # two streams interleaved on one thread (zip would drop a's delta when b ends first)
            x, y = next(a, None), next(b, None)
            ta += [x] if x is not None else []
            tb += [y] if y is not None else []
            if x is None and y is None:
                break
        assert "".join(ta) == singles[(PROMPTS[2], 2)].text and "".join(tb) == singles[(PROMPTS[3], 3)].text
        rest = first + "".join(g)
        assert rest == singles[(PROMPTS[0], 0)].text
        return True

    assert in_thread(scenario)
    assert wait_for_pages_free(engine) == 0


def test_bad_request_fails_alone(engine, singles):
    out = {}

    def long_stream():
        out["text"] = "".join(engine.stream(PROMPTS[1], **settings(1)))

    t = threading.Thread(target=long_stream)
    t.start()
    with pytest.raises(ValueError, match="threshold must be in"):
        engine.generate(["x"], threshold=2.0)
    with pytest.raises(ValueError, match="prompt 1: the prompt is empty"):
        engine.generate(["fine", ""])
    with pytest.raises(ValueError, match="prompt token 5000000000 at index 1 is outside the vocabulary"):
        engine.generate_ids([1, 5_000_000_000])
    with pytest.raises(fastdllm_rt.MemoryBudgetError):
        fastdllm_rt.Engine(engine.path, max_memory=4 * engine.stats()["page_bytes"]).generate_ids(
            list(range(100)), max_new_tokens=64)
    t.join(120)
    assert out["text"] == singles[(PROMPTS[1], 1)].text
    assert wait_for_pages_free(engine) == 0


def test_requests_wait_for_kv_pages(demo_dir, engine):
    """A budget that holds one request at a time: the others queue and all finish."""
    page = engine.stats()["page_bytes"]
    with fastdllm_rt.Engine(demo_dir, max_memory=10 * page) as e:
        ids = [e.encode_prompt(p) for p in PROMPTS[:3]]
        res = e.generate_ids(ids, **GEN)
        st = e.stats()
        assert max(st["batch_size_histogram"]) == 1 and st["pages_total"] == 10
        for i, r in zip(ids, res):
            assert r.token_ids == e.generate_ids(i, **GEN).token_ids


def test_asyncio_streams_and_generate(engine, singles):
    async def stream(i, p):
        return "".join([d async for d in engine.astream(p, **settings(i))])

    async def main():
        texts = await asyncio.gather(*(stream(i, p) for i, p in enumerate(PROMPTS)))
        results = await engine.agenerate(PROMPTS[:3], **GEN)
        agen = engine.astream("Hello there", max_new_tokens=256, threshold=1.0)
        await agen.__anext__()
        await agen.aclose()  # leaving early frees the pages
        return texts, results

    texts, results = asyncio.run(main())
    for i, p in enumerate(PROMPTS):
        assert texts[i] == singles[(p, i)].text
    for p, r in zip(PROMPTS[:3], results):
        assert r.token_ids == engine.generate([p], **GEN)[0].token_ids
    assert engine.stats()["pages_in_use"] == 0


def test_stats_and_limits(demo_dir, engine):
    st = engine.stats()
    for key in ("model_forwards", "sequence_forwards", "batch_size_histogram", "prefix_cache_hit_tokens",
                "pages_in_use", "pages_total", "requests_waiting", "requests_running"):
        assert key in st
    # KV in bf16 for half models (half the memory), fp32 for fp32 ones (token-exact)
    assert st["kv_dtype"] == ("float32" if engine.model.dtype == "float32" else "bfloat16")
    with pytest.raises(ValueError, match="threads must be at most"):
        fastdllm_rt.Engine(demo_dir, threads=100000)
    with pytest.raises(ValueError, match="max_batch_size must be a positive integer"):
        fastdllm_rt.Engine(demo_dir, max_batch_size=0)
    with pytest.raises(ValueError, match="kv_dtype must be one of"):
        fastdllm_rt.Engine(demo_dir, kv_dtype="int8")


def test_close_ends_running_requests(demo_dir):
    e = fastdllm_rt.Engine(demo_dir)
    s = e.stream("Hello there", max_new_tokens=512, threshold=1.0)
    next(s)
    e.close()
    with pytest.raises(fastdllm_rt.GenerationError, match="the engine was closed"):
        list(s)
    with pytest.raises(ValueError, match="the engine is closed"):
        e.generate(["x"])
