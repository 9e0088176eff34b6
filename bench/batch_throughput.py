"""The batched engine's throughput, shared by bench/cpu_batch.py and
bench/gpu_batch.py: N concurrent requests through one Engine (continuous
batching: one forward serves them all) against the same N requests run one
after another on the same engine, in one run, for each N. Random bf16 weights
(no downloads): confidences stay under the threshold, so a forward commits ~1
token per sequence, the worst case for a diffusion decoder; a trained model
commits ~2-3. Every request gets its own random prompt (no prefix sharing)."""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def measure(engine, prompts, gen: dict, batched: bool) -> dict:
    before = engine.stats()
    t = time.perf_counter()
    if batched:
        results = engine.generate_ids(prompts, **gen)
    else:
        results = [engine.generate_ids(p, **gen) for p in prompts]
    wall = time.perf_counter() - t
    after = engine.stats()
    tokens = sum(len(r.token_ids) for r in results)
    model_forwards = after["model_forwards"] - before["model_forwards"]
    seq_forwards = after["sequence_forwards"] - before["sequence_forwards"]
    hist = {int(k): v - before["batch_size_histogram"].get(k, 0) for k, v in after["batch_size_histogram"].items()}
    return {"wall_s": wall, "generated_tokens": tokens, "tokens_per_s": tokens / wall,
            "model_forwards": model_forwards, "sequence_forwards": seq_forwards,
            "ms_per_model_forward": 1e3 * wall / model_forwards,
            "batch_tokens": after["batch_tokens"] - before["batch_tokens"],
            "batch_size_histogram": {k: v for k, v in sorted(hist.items()) if v},
            "tokens_per_sequence_forward": tokens / seq_forwards,
            "ids": [r.token_ids for r in results]}


def run(engine, counts, prompt_tokens: int, gen: dict, log=sys.stderr) -> list:
    rng = np.random.default_rng(0)
    out = []
    for n in counts:
        prompts = [rng.integers(0, 151000, prompt_tokens).tolist() for _ in range(n)]
        seq = measure(engine, prompts, gen, batched=False)
        bat = measure(engine, prompts, gen, batched=True)
        same = seq.pop("ids") == bat.pop("ids")
        entry = {"concurrent_requests": n, "batched": bat, "one_after_another": seq,
                 "speedup_tokens_per_s": bat["tokens_per_s"] / seq["tokens_per_s"],
                 "outputs_identical": same}
        out.append(entry)
        print(json.dumps(entry), file=log, flush=True)
    return out
