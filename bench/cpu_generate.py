"""Whole-generation CPU benchmark: Fast-dLLM v2 at the Qwen2.5-1.5B shape (default), or
LLaDA-8B / Dream-7B (--family llada|dream) with their official samplers; random weights.

Fast-dLLM v2 (default): runs Engine.generate_ids for max_new_tokens=256 from a 100-token
prompt, with and without the sub-block cache, and reports wall time, forwards, forwards
per second and tokens per forward; then the same with the PyTorch reference of the loop
(bench/torch_generate.py, bf16 eager). Random weights give ~1 token per forward
(confidences stay under the threshold), the worst case for a diffusion decoder;
a trained model commits ~2-3 tokens per forward. Both sides run the same
algorithm, but bf16 rounding differs, so compare time per forward and per token.

--family llada|dream: a random checkpoint in the official layout at the real layer shapes
(bench/qwen_shapes.py LLADA_8B / DREAM_7B; --tiny: 64-wide layers, real vocabulary and
special ids, for smoke tests) with --layers of the real layer count (default 2: the
embedding and output head are full size, so even 2 layers are ~3 GB in bf16), bf16 by
default (--dtype). The output-head row of the mask token is zeroed (as the tests do).
Runs the engine with --sampler (full_attention_dllms.md section 6) for each --cache
(default: every cache mode the sampler has), then the PyTorch reference loop of the same
sampler over the same weights (bench/torch_full_attention.py), and reports for both wall
time, forwards, forwards per second and tokens per forward, and how the generated ids
agree (fp32: they should match exactly; bf16: the agreement fraction only, rounding
differs). Prints JSON.

    python bench/cpu_generate.py [--model-dir DIR] [--skip-torch] [--out FILE] [--threads N]
    python bench/cpu_generate.py --family llada|dream [--tiny] [--layers N] [--dtype bfloat16|float32]
        [--sampler S] [--cache none,prefix,dual] [--gen-length G] [--prompt-len P] [--steps N]
        [--block-size B] [--threshold T] [--factor F] [--entropy-threshold H]
        [--delimiter-threshold D] [--delimiter-ids 198,13] [--threads N] [--skip-torch] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import fastdllm_rt  # noqa: E402
from bench_util import cpu_name, emit  # noqa: E402
from qwen_shapes import (FULL_ATTENTION_SHAPES, QWEN25_1_5B, layer_count, with_layers,  # noqa: E402
                         write_random_bf16_model, write_random_full_attention_model)

DREAM_ALGS = ("maskgit_plus", "topk_margin", "entropy", "origin")


def run_fast_dllm_v2(a):
    model_dir = a.model_dir or os.path.join(tempfile.gettempdir(), "fastdllm_bench_qwen2.5_1.5b_bf16")
    write_random_bf16_model(model_dir, QWEN25_1_5B)
    engine = fastdllm_rt.Engine(model_dir, max_seq_len=4096, threads=a.threads)
    threads = engine.threads
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
                                                  "threads": threads,
                                                  "isa": fastdllm_rt.cpu_isa()},
              "shape": dict(QWEN25_1_5B, name="Qwen2.5-1.5B"), "weights": "random bfloat16",
              "settings": {"prompt_tokens": a.prompt_tokens, "max_new_tokens": a.max_new_tokens,
                           "block_size": 32, "sub_block_size": 8, "threshold": a.threshold},
              "runs": runs}
    if not a.skip_torch:
        from torch_generate import load_reference, torch_generate
        if a.threads:
            torch.set_num_threads(a.threads)
        ref = load_reference(model_dir, "cpu")
        report["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(), "runs": []}
        for cache in (False, True):
            report["torch"]["runs"].append(torch_generate(ref, prompt, a.max_new_tokens, cache, a.threshold))
            print(json.dumps(report["torch"]["runs"][-1]), file=sys.stderr, flush=True)
    emit(report, a.out)


# ---------------------------------------------------------------- LLaDA / Dream

def sampler_caches(family: str, sampler: str) -> tuple:
    """The cache modes the official code has for a sampler (full_attention_dllms.md section 6)."""
    if family == "llada":
        return ("none",) if sampler == "low_confidence" else ("none", "prefix", "dual")
    if sampler in ("origin", "entropy_threshold"):
        return ("none",)
    if sampler == "adablock":
        return ("none", "dual")
    return ("none", "prefix", "dual")


def has_blocks(family: str, sampler: str, cache: str) -> bool:
    """Dream's own algorithms and confidence_threshold without cache (4.1) have no blocks."""
    return not (family == "dream" and cache == "none" and sampler in DREAM_ALGS + ("threshold",))


def gen_settings(a, family: str, cache: str) -> dict:
    """The section-6 keywords of one run, all explicit (engine and reference defaults differ)."""
    g = {"sampler": a.sampler, "max_new_tokens": a.max_new_tokens, "steps": a.steps or a.max_new_tokens,
         "block_size": a.block_size if has_blocks(family, a.sampler, cache) else None, "cache": cache,
         "threshold": a.threshold, "factor": a.factor, "entropy_threshold": a.entropy_threshold,
         "delimiter_threshold": a.delimiter_threshold}
    if a.delimiter_ids:
        g["delimiter_ids"] = [int(t) for t in a.delimiter_ids.split(",")]
    return g


def agreement(a_ids, b_ids) -> float:
    n = max(len(a_ids), len(b_ids))
    return sum(x == y for x, y in zip(a_ids, b_ids)) / n if n else 1.0


def first_difference(a_ids, b_ids):
    """Index of the first differing token (a length difference counts), None if equal."""
    for i, (x, y) in enumerate(zip(a_ids, b_ids)):
        if x != y:
            return i
    return None if len(a_ids) == len(b_ids) else min(len(a_ids), len(b_ids))


def run_full_attention(a):
    family = a.family
    name, full, tiny = FULL_ATTENTION_SHAPES[family]
    base = tiny if a.tiny else full
    shape = with_layers(family, base, a.layers)
    tag = f"{family}{'_tiny' if a.tiny else ''}_{a.layers}l_{'bf16' if a.dtype == 'bfloat16' else 'fp32'}"
    model_dir = a.model_dir or os.path.join(tempfile.gettempdir(), f"fastdllm_bench_{tag}")
    t = time.perf_counter()
    write_random_full_attention_model(model_dir, family, shape, a.dtype)
    write_s = time.perf_counter() - t
    caches = a.cache.split(",") if a.cache else sampler_caches(family, a.sampler)
    mask_id = shape["mask_token_id"]
    # prompt ids below every special id (mask, eos / pad) of both families
    prompt = np.random.default_rng(0).integers(0, 100000, a.prompt_tokens).tolist()
    engine = fastdllm_rt.Engine(model_dir, max_seq_len=a.prompt_tokens + a.max_new_tokens, threads=a.threads)
    threads = engine.threads
    runs, engine_ids = [], {}
    for cache in caches:
        gen = gen_settings(a, family, cache)
        t = time.perf_counter()
        r = engine.generate_ids(prompt, **gen)
        wall = time.perf_counter() - t
        engine_ids[cache] = list(r.token_ids)
        runs.append(dict({k: gen[k] for k in ("cache", "block_size", "steps")}, wall_s=wall,
                         new_tokens=len(r.token_ids), masks_left=r.token_ids.count(mask_id), forwards=r.num_forwards,
                         forwards_per_s=r.num_forwards / wall, tokens_per_s=len(r.token_ids) / wall,
                         tokens_per_forward=r.tokens_per_forward, finish_reason=r.finish_reason, timings=r.timings))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    engine.close()
    del engine
    layers_full = layer_count(family, full)
    report = {"bench": "cpu_generate", "family": family,
              "device": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "isa": fastdllm_rt.cpu_isa()},
              "shape": dict(shape, name=name + (" (tiny layers)" if a.tiny else "")), "tiny": a.tiny,
              "layers_run": a.layers, "layers_full": layers_full,
              "layers_note": None if a.layers == layers_full else
              f"{a.layers} of {layers_full} layers (embedding and output head full size): per-forward times are "
              "not the full model's",
              "weights": f"random {a.dtype}, layers |w| ~0.01, output head |w| ~2/sqrt(hidden), "
                         f"its row of mask {mask_id} zeroed",
              "model_write_s": write_s,
              "note": "random weights keep confidences low: expect ~1 token per forward with threshold rules "
                      "(the worst case); compare time per forward",
              "settings": {"sampler": a.sampler, "prompt_tokens": a.prompt_tokens, "gen_length": a.max_new_tokens,
                           "steps": a.steps or a.max_new_tokens, "block_size": a.block_size, "caches": list(caches),
                           "threshold": a.threshold, "factor": a.factor, "entropy_threshold": a.entropy_threshold,
                           "delimiter_threshold": a.delimiter_threshold if math.isfinite(a.delimiter_threshold)
                           else "inf", "delimiter_ids": a.delimiter_ids},
              "runs": runs}
    if not a.skip_torch:
        from torch_full_attention import load_reference, torch_generate
        torch.set_num_threads(threads)
        dtype = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
        t = time.perf_counter()
        ref = load_reference(model_dir, dtype)
        report["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(), "dtype": a.dtype,
                           "load_s": time.perf_counter() - t,
                           "loop": "tests/full_attention_reference.py reference_generate (eager forward)", "runs": []}
        for cache, er in zip(caches, runs):
            try:
                tr = torch_generate(ref, prompt, **gen_settings(a, family, cache))
            except ValueError as e:  # e.g. Dream origin with steps > 1 (random draws): no reference
                tr = {"error": str(e)}
            ids = tr.pop("ids", None)
            tr = dict(cache=cache, **tr)
            if ids is not None:
                tr["token_agreement_with_engine"] = agreement(engine_ids[cache], ids)
                tr["first_difference"] = first_difference(engine_ids[cache], ids)
                tr["forwards_equal_engine"] = tr["forwards"] == er["forwards"]
                if a.dtype == "float32":
                    tr["ids_equal_engine"] = engine_ids[cache] == ids
                tr["engine_speedup_wall"] = tr["wall_s"] / er["wall_s"]
            report["torch"]["runs"].append(tr)
            print(json.dumps(tr), file=sys.stderr, flush=True)
    emit(report, a.out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=("fast_dllm_v2", "llada", "dream"), default="fast_dllm_v2")
    ap.add_argument("--model-dir", help="default: a folder under the temp dir named after the settings")
    ap.add_argument("--max-new-tokens", "--gen-length", dest="max_new_tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", "--prompt-len", dest="prompt_tokens", type=int, default=100)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--threads", type=int, help="engine and torch threads (default: the engine's default)")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--out")
    fa = ap.add_argument_group("--family llada / dream")
    fa.add_argument("--tiny", action="store_true", help="64-wide layers (real vocabulary): a smoke test")
    fa.add_argument("--layers", type=int, default=2, help="layers to build and run (LLaDA-8B has 32, Dream-7B 28)")
    fa.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    fa.add_argument("--sampler", default="threshold", help="full_attention_dllms.md section 6")
    fa.add_argument("--cache", help="comma list of none,prefix,dual (default: every mode the sampler has)")
    fa.add_argument("--steps", type=int, help="default: gen length")
    fa.add_argument("--block-size", type=int, default=32,
                    help="block length (AdaBlock: the initial one); ignored where the sampler has no blocks")
    fa.add_argument("--factor", type=float, default=1.0)
    fa.add_argument("--entropy-threshold", type=float, default=0.5)
    fa.add_argument("--delimiter-threshold", type=float, default=math.inf)
    fa.add_argument("--delimiter-ids", help="AdaBlock, comma list (default: the family's)")
    a = ap.parse_args()
    if a.family == "fast_dllm_v2":
        run_fast_dllm_v2(a)
    else:
        if a.layers < 1:
            ap.error("--layers must be at least 1")
        run_full_attention(a)


if __name__ == "__main__":
    main()
