"""Batched decoding on a GPU (random bf16 weights, Qwen2.5 shapes): 1, 4, 16
and 32 concurrent requests with the sub-block cache on, aggregate generated
tokens/s and ms per forward, batched against the same requests run one after
another, in one run (bench/batch_throughput.py); then one request through the
PyTorch reference of the loop (bf16 eager) on the same GPU. Needs a CUDA
device. Prints JSON.

    python bench/gpu_batch.py [--shape 1.5b|7b] [--counts 1,4,16,32] [--skip-torch] [--out FILE]

The design target: >= 8x the single-request throughput at 16 concurrent
requests, since a decoding forward streams the weights once whatever the batch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(__file__))
import fastdllm_rt  # noqa: E402
from batch_throughput import run  # noqa: E402
from bench_util import emit  # noqa: E402
from qwen_shapes import SHAPES, bench_model_dir, write_random_bf16_model  # noqa: E402
from torch_generate import load_reference, torch_generate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", default="1.5b", choices=sorted(SHAPES))
    ap.add_argument("--model-root", default=tempfile.gettempdir())
    ap.add_argument("--counts", default="1,4,16,32")
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    if not fastdllm_rt.cuda_status()["available"]:
        sys.exit(fastdllm_rt.cuda_status()["message"])
    name, s = SHAPES[a.shape]
    path = write_random_bf16_model(bench_model_dir(a.model_root, a.shape), s)
    counts = [int(c) for c in a.counts.split(",")]
    # No prefix cache: the batched run repeats the sequential run's prompts.
    engine = fastdllm_rt.Engine(path, device="cuda", max_seq_len=4096, max_batch_size=max(counts), prefix_cache=False)
    gen = dict(max_new_tokens=a.max_new_tokens, block_size=32, sub_block_size=8, threshold=0.9, use_block_cache=True,
               stop_token_id=151645)
    engine.generate_ids([list(range(100))] * max(counts), max_new_tokens=64)  # warm-up: graphs, allocator
    report = {"bench": "gpu_batch", "device": {"gpu": torch.cuda.get_device_name(), "cuda": fastdllm_rt.cuda_status()},
              "shape": dict(s, name=name), "weights": "random bfloat16", "kv_dtype": engine.kv_dtype,
              "settings": dict(gen, prompt_tokens=a.prompt_tokens, max_batch_size=max(counts), prefix_cache=False),
              "results": run(engine, counts, a.prompt_tokens, gen), "graph_runs": dict(engine.model.graph_runs)}
    if not a.skip_torch:
        engine.close()
        del engine
        ref = load_reference(path, "cuda")
        r = torch_generate(ref, list(range(1000, 1000 + a.prompt_tokens)), a.max_new_tokens, True)
        report["torch_one_request"] = dict(r, version=torch.__version__)
        print(json.dumps(report["torch_one_request"]), file=sys.stderr, flush=True)
    emit(report, a.out)


if __name__ == "__main__":
    main()
