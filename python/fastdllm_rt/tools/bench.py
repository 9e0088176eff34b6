"""``fastdllm-rt bench``: throughput of a model folder on this machine, with
no torch: N prompts through C concurrent streams; tokens/s, tokens per
forward, ms per forward and time to first token. Prompts are built-in texts
(chat-templated) when the folder has a tokenizer, else random ids."""
from __future__ import annotations

import statistics
import threading
import time

import numpy as np

from ..quant.calib import BUILTIN_PROMPTS


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc="bench", unit="req")
    except ImportError:
        return None


def run_bench(engine, prompts: int = 16, concurrency: int = 4, max_new_tokens: int = 128, seed: int = 0,
              progress: bool = True, **gen) -> dict:
    if prompts < 1 or concurrency < 1 or max_new_tokens < 1:
        raise ValueError("prompts, concurrency and max_new_tokens must be >= 1")
    rng = np.random.default_rng(seed)
    if engine.tokenizer is not None:
        work = [engine.encode_prompt(BUILTIN_PROMPTS[i % len(BUILTIN_PROMPTS)]) for i in range(prompts)]
    else:
        work = [list(map(int, rng.integers(0, engine.config.vocab_size, 32))) for _ in range(prompts)]
    lock = threading.Lock()
    results, ttft, errors = [], [], []
    nxt = [0]
    bar = _bar(prompts, progress)
    before = engine.stats()

    def worker():
        while True:
            with lock:
                if nxt[0] >= prompts:
                    return
                i = nxt[0]
                nxt[0] += 1
            t0 = time.monotonic()
            try:
                s = engine.stream_ids(work[i], max_new_tokens=max_new_tokens, **gen)
                first = None
                for _ in s:
                    if first is None:
                        first = time.monotonic() - t0
                r = s.result
            except Exception as e:  # noqa: BLE001  (reported, not raised: the others go on)
                with lock:
                    errors.append(str(e))
                continue
            with lock:
                results.append(r)
                ttft.append(first if first is not None else r.timings.get("first_forward_s", 0.0))
                if bar is not None:
                    bar.update(1)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    if bar is not None:
        bar.close()
    if errors:
        raise ValueError(f"{len(errors)} of {prompts} requests failed; the first: {errors[0]}")
    after = engine.stats()
    forwards = after["model_forwards"] - before["model_forwards"]
    tokens = sum(len(r.token_ids) for r in results)
    return {"prompts": prompts, "concurrency": concurrency, "max_new_tokens": max_new_tokens,
            "wall_s": round(wall, 3), "generated_tokens": tokens, "tokens_per_s": round(tokens / wall, 2),
            "batched_forwards": forwards, "ms_per_forward": round(1e3 * wall / max(1, forwards), 2),
            "tokens_per_forward": round(statistics.mean(r.tokens_per_forward for r in results), 3),
            "sequences_per_forward": round((after["sequence_forwards"] - before["sequence_forwards"])
                                           / max(1, forwards), 2),
            "time_to_first_token_s": {"p50": round(float(np.percentile(ttft, 50)), 4),
                                      "p90": round(float(np.percentile(ttft, 90)), 4)},
            "text": engine.tokenizer is not None}
