"""Whole-generation GPU benchmark (random bf16 weights, Qwen2.5 shapes): 256 new
tokens with and without the sub-block cache; wall time, forwards per second,
tokens per forward. Needs a CUDA device. Prints JSON.

    python bench/gpu_generate.py [--shape 1.5b|7b] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import fastdllm_rt  # noqa: E402
from bench_util import emit  # noqa: E402
from gpu_forward import SHAPES  # noqa: E402
from qwen_shapes import write_random_bf16_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="1.5b", choices=sorted(SHAPES))
    ap.add_argument("--model-root", default=tempfile.gettempdir())
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--out")
    a = ap.parse_args()
    if not fastdllm_rt.cuda_status()["available"]:
        sys.exit(fastdllm_rt.cuda_status()["message"])
    name, s = SHAPES[a.shape]
    path = write_random_bf16_model(os.path.join(a.model_root, f"fastdllm_bench_{a.shape}_bf16"), s)
    engine = fastdllm_rt.Engine(path, device="cuda", max_seq_len=4096)
    prompt = np.random.default_rng(0).integers(0, 151000, 100).tolist()
    runs = []
    for cache in (False, True):
        t = time.perf_counter()
        r = engine.generate_ids(prompt, max_new_tokens=a.max_new_tokens, use_block_cache=cache, stop_token_id=151645)
        wall = time.perf_counter() - t
        runs.append({"use_block_cache": cache, "wall_s": wall, "new_tokens": len(r.token_ids), "forwards": r.num_forwards,
                     "forwards_per_s": r.num_forwards / wall, "tokens_per_forward": r.tokens_per_forward})
    emit({"bench": "gpu_generate", "shape": dict(s, name=name), "device": fastdllm_rt.cuda_status(), "runs": runs}, a.out)


if __name__ == "__main__":
    main()
