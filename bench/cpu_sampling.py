"""Sampling's vocabulary step on the CPU: fastdllm_rt (ops.sample: the
candidates reduction of ops::sampling_candidates, then the host draw over the
sorted candidates) against the usual PyTorch top-k / top-p sampler (softmax,
sort, cumsum, mask, renormalise, multinomial) on the same logits, alternating
runs. Rows of a Qwen2.5 vocabulary (151936); "peaked" rows look like a trained
model's (a few likely tokens over a flat tail), "flat" rows like random weights'
(the nucleus then holds most of the vocabulary: the worst case). Prints JSON.

    python bench/cpu_sampling.py [--rows 8,32] [--reps N] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import fastdllm_rt  # noqa: E402
from bench_util import cpu_name, emit, time_pair  # noqa: E402

VOCAB = 151936
SETTINGS = [dict(temperature=0.8, top_p=0.95, top_k=0), dict(temperature=0.7, top_p=0.9, top_k=50)]


def logits(rows: int, kind: str, rng) -> np.ndarray:
    x = rng.standard_normal((rows, VOCAB)).astype(np.float32) * 2
    if kind == "peaked":
        for r in range(rows):
            x[r, rng.choice(VOCAB, 5, replace=False)] += 14
    return x


def torch_sample(x: torch.Tensor, temperature: float, top_p: float, top_k: int, gen: torch.Generator):
    p = torch.softmax(x / temperature, -1)
    if top_k > 0:
        p, idx = torch.topk(p, top_k, -1)
    else:
        p, idx = torch.sort(p, -1, descending=True)
    cum = torch.cumsum(p / p.sum(-1, keepdim=True), -1)
    p = torch.where(cum - p / p.sum(-1, keepdim=True) > top_p, torch.zeros_like(p), p)  # keep the first past top_p
    pick = torch.multinomial(p / p.sum(-1, keepdim=True), 1, generator=gen)
    return idx.gather(-1, pick)[:, 0], p.gather(-1, pick)[:, 0] / p.sum(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", default="8,32")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    results = []
    for rows in [int(r) for r in a.rows.split(",")]:
        for kind in ("peaked", "flat"):
            x = logits(rows, kind, rng)
            xt = torch.from_numpy(x)
            for s in SETTINGS:
                t = time_pair([lambda: fastdllm_rt._C._testing.ops.sample(x, s["temperature"], s["top_p"], s["top_k"], seed=1),
                               lambda: torch_sample(xt, s["temperature"], s["top_p"], s["top_k"], gen)], a.reps)
                _, count, _ = fastdllm_rt._C._testing.ops.sampling_candidates(x, s["temperature"], s["top_p"], s["top_k"])
                e = dict(s, rows=rows, logits=kind, fastdllm_rt_s=t[0], torch_s=t[1],
                         fastdllm_rt_median_ms=1e3 * statistics.median(t[0]),
                         torch_median_ms=1e3 * statistics.median(t[1]),
                         speedup_vs_torch=statistics.median(t[1]) / statistics.median(t[0]),
                         mean_candidates_per_row=float(count.mean()))
                results.append(e)
                print({k: v for k, v in e.items() if not k.endswith("_s")}, file=sys.stderr, flush=True)
    emit({"bench": "cpu_sampling", "cpu": cpu_name(), "threads": torch.get_num_threads(),
          "isa": fastdllm_rt.cpu_isa(), "torch": torch.__version__, "vocab": VOCAB, "results": results}, a.out)


if __name__ == "__main__":
    main()
