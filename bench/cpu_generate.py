"""Whole-generation CPU benchmark at the Qwen2.5-1.5B shape (random bf16 weights).

Runs Engine.generate_ids for max_new_tokens=256 from a 100-token prompt, with and
without the sub-block cache, and reports wall time, forwards, forwards per second
and tokens per forward; then the same with the PyTorch reference of the loop
(bench/torch_generate.py, bf16 eager). Random weights give ~1 token per forward
(confidences stay under the threshold), the worst case for a diffusion decoder;
a trained model commits ~2-3 tokens per forward. Both sides run the same
algorithm, but bf16 rounding differs, so compare time per forward and per token.
Prints JSON.

    python bench/cpu_generate.py [--model-dir DIR] [--skip-torch] [--out FILE]
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
from bench_util import cpu_name, emit  # noqa: E402
from qwen_shapes import QWEN25_1_5B, write_random_bf16_model  # noqa: E402
from torch_generate import load_reference, torch_generate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "fastdllm_bench_qwen2.5_1.5b_bf16"))
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    write_random_bf16_model(a.model_dir, QWEN25_1_5B)
    engine = fastdllm_rt.Engine(a.model_dir, max_seq_len=4096)
    prompt = np.random.default_rng(0).integers(0, 151000, a.prompt_tokens).tolist()
    runs = []
    for cache in (False, True):
        t = time.perf_counter()
        r = engine.generate_ids(prompt, max_new_tokens=a.max_new_tokens, threshold=a.threshold,
                                use_block_cache=cache, block_size=32, sub_block_size=8, stop_token_id=151645)
        wall = time.perf_counter() - t
        runs.append({"use_block_cache": cache, "wall_s": wall, "new_tokens": len(r.token_ids),
                     "forwards": r.num_forwards, "forwards_per_s": r.num_forwards / wall,
                     "tokens_per_s": len(r.token_ids) / wall, "tokens_per_forward": r.tokens_per_forward,
                     "finish_reason": r.finish_reason, "timings": r.timings})
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    report = {"bench": "cpu_generate", "device": {"cpu": cpu_name(), "cores": os.cpu_count(),
                                                  "threads": fastdllm_rt._C.get_num_threads(),
                                                  "isa": fastdllm_rt.cpu_isa()},
              "shape": dict(QWEN25_1_5B, name="Qwen2.5-1.5B"), "weights": "random bfloat16",
              "settings": {"prompt_tokens": a.prompt_tokens, "max_new_tokens": a.max_new_tokens,
                           "block_size": 32, "sub_block_size": 8, "threshold": a.threshold},
              "runs": runs}
    if not a.skip_torch:
        ref = load_reference(a.model_dir, "cpu")
        report["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(), "runs": []}
        for cache in (False, True):
            report["torch"]["runs"].append(torch_generate(ref, prompt, a.max_new_tokens, cache, a.threshold))
            print(json.dumps(report["torch"]["runs"][-1]), file=sys.stderr, flush=True)
    emit(report, a.out)


if __name__ == "__main__":
    main()
