"""Whole-generation GPU benchmark of one request (random bf16 weights, Qwen2.5
shapes): 256 new tokens greedy with and without the sub-block cache, and one
sampling run (temperature 0.8, top_p 0.95); wall time, forwards per second,
tokens per forward, and the mean time per forward next to gpu_forward.py's
forward time shows the per-step gap (one sync per forward, the scheduler's
bookkeeping, the launch). Then the same greedy runs with the PyTorch reference
of the loop (bench/torch_generate.py, bf16 eager) on the same GPU. Needs a CUDA
device. Prints JSON. (Many requests at once: bench/gpu_batch.py.)

    python bench/gpu_generate.py [--shape 1.5b|7b] [--skip-torch] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import fastdllm_rt  # noqa: E402
from bench_util import emit  # noqa: E402
from qwen_shapes import SHAPES, bench_model_dir, write_random_bf16_model  # noqa: E402
from torch_generate import load_reference, torch_generate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="1.5b", choices=sorted(SHAPES))
    ap.add_argument("--model-root", default=tempfile.gettempdir())
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    if not fastdllm_rt.cuda_status()["available"]:
        sys.exit(fastdllm_rt.cuda_status()["message"])
    name, s = SHAPES[a.shape]
    path = write_random_bf16_model(bench_model_dir(a.model_root, a.shape), s)
    engine = fastdllm_rt.Engine(path, device="cuda", max_seq_len=4096)
    prompt = np.random.default_rng(0).integers(0, 151000, 100).tolist()
    engine.generate_ids(prompt, max_new_tokens=64)  # warm-up: graphs captured, allocator filled
    runs = []
    configs = [(False, None), (True, None), (True, dict(temperature=0.8, top_p=0.95, seed=0))]
    for cache, sampling in configs:
        engine.generate_ids(prompt, max_new_tokens=64, use_block_cache=cache, **(sampling or {}))  # this path's graphs
        t = time.perf_counter()
        r = engine.generate_ids(prompt, max_new_tokens=a.max_new_tokens, use_block_cache=cache, stop_token_id=151645,
                                **(sampling or {}))
        wall = time.perf_counter() - t
        runs.append({"use_block_cache": cache, "sampling": sampling, "wall_s": wall,
                     "new_tokens": len(r.token_ids),
                     "forwards": r.num_forwards, "forwards_per_s": r.num_forwards / wall,
                     "ms_per_forward": 1e3 * wall / r.num_forwards, "tokens_per_s": len(r.token_ids) / wall,
                     "tokens_per_forward": r.tokens_per_forward, "graph_runs": dict(engine.model.graph_runs)})
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    report = {"bench": "gpu_generate", "shape": dict(s, name=name), "device": fastdllm_rt.cuda_status(),
              "settings": {"prompt_tokens": 100, "max_new_tokens": a.max_new_tokens, "block_size": 32,
                           "sub_block_size": 8, "threshold": 0.9}, "runs": runs}
    if not a.skip_torch:
        del engine
        ref = load_reference(path, "cuda")
        report["torch"] = {"version": torch.__version__, "runs": []}
        for cache in (False, True):
            report["torch"]["runs"].append(torch_generate(ref, prompt, a.max_new_tokens, cache))
            print(json.dumps(report["torch"]["runs"][-1]), file=sys.stderr, flush=True)
    emit(report, a.out)


if __name__ == "__main__":
    main()
