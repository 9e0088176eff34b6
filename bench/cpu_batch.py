"""Batched decoding on the CPU at the Qwen2.5-1.5B shape (random bf16 weights):
1, 4 and 16 concurrent requests with the sub-block cache on, aggregate
generated tokens/s and ms per forward, batched against the same requests run
one after another, in one run (bench/batch_throughput.py); then one request
through the PyTorch reference of the loop (bf16 eager) for scale. Prints JSON.

    python bench/cpu_batch.py [--counts 1,4,16] [--max-new-tokens 32] [--skip-torch] [--out FILE]

A CPU forward of 32 new tokens is already compute-bound on a few cores, so
batching buys less here than on a GPU: the weights are read once per forward,
but the FLOPs grow with the batch.
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
from bench_util import cpu_name, emit  # noqa: E402
from qwen_shapes import QWEN25_1_5B, write_random_bf16_model  # noqa: E402
from torch_generate import load_reference, torch_generate  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "fastdllm_bench_qwen2.5_1.5b_bf16"))
    ap.add_argument("--counts", default="1,4,16")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    write_random_bf16_model(a.model_dir, QWEN25_1_5B)
    counts = [int(c) for c in a.counts.split(",")]
    # No prefix cache: the batched run repeats the sequential run's prompts, which
    # it would otherwise find cached (their prefills would cost nothing).
    engine = fastdllm_rt.Engine(a.model_dir, max_seq_len=4096, threads=a.threads, max_batch_size=max(counts),
                                max_batch_tokens=max(counts) * 32, prefix_cache=False)
    gen = dict(max_new_tokens=a.max_new_tokens, block_size=32, sub_block_size=8, threshold=0.9, use_block_cache=True,
               stop_token_id=151645)
    engine.generate_ids(list(range(40)), max_new_tokens=32)  # warm-up
    report = {"bench": "cpu_batch",
              "device": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": a.threads,
                         "isa": fastdllm_rt.cpu_isa()},
              "shape": dict(QWEN25_1_5B, name="Qwen2.5-1.5B"), "weights": "random bfloat16",
              "kv_dtype": engine.kv_dtype,
              "settings": dict(gen, prompt_tokens=a.prompt_tokens, max_batch_size=max(counts),
                               max_batch_tokens=max(counts) * 32, prefix_cache=False),
              "results": run(engine, counts, a.prompt_tokens, gen)}
    if not a.skip_torch:
        engine.close()
        del engine
        torch.set_num_threads(a.threads)
        ref = load_reference(a.model_dir, "cpu")
        prompt = list(range(1000, 1000 + a.prompt_tokens))
        r = torch_generate(ref, prompt, a.max_new_tokens, True)
        report["torch_one_request"] = dict(r, version=torch.__version__, threads=a.threads)
        print(json.dumps(report["torch_one_request"]), file=sys.stderr, flush=True)
    emit(report, a.out)


if __name__ == "__main__":
    main()
