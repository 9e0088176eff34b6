"""Quality of low-bit weights against the float model, in one run: for each
format (int8, int4) and method (rtn, gptq, awq), the KL divergence of the
next-token distributions over held-out sequences (Engine.logits: the model's
own prefill), top-1 agreement, and Fast-dLLM v2 greedy generation agreement
(identical outputs, common prefix, tokens per forward).

Models are random (no downloads): Gaussian weights scaled as in
tests/model_factory.py, at a tiny shape or the Qwen2.5-1.5B shape (--layers
to cut its depth). Random weights are a PESSIMISTIC proxy: trained weights and
activations have structure (outlier channels, peaked distributions) that GPTQ
and AWQ exploit and that keeps argmax decisions stable; Gaussian weights have
none, and their next-token distributions are flat. Prints JSON.

    python bench/quant_quality.py [--shape tiny|1.5b] [--layers N] [--methods rtn,gptq,awq] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import fastdllm_rt  # noqa: E402
from fastdllm_rt.quant.quantize import quantize_model  # noqa: E402
from fastdllm_rt.safetensors_io import bf16_bits  # noqa: E402
from bench_util import cpu_name, emit  # noqa: E402
from qwen_shapes import QWEN25_1_5B, weight_shapes, write_model_folder  # noqa: E402

TINY = dict(vocab_size=2048, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=1, head_dim=64, tie_word_embeddings=False)


def write_gaussian_model(path: str, s: dict, seed: int = 0) -> str:
    """bf16 weights N(0, scale^2 / in_features), norms near 1; the residual
    branches' output matrices (o_proj, down_proj) scaled by 1 / sqrt(2 layers)
    as GPT-2 initialises them, so that the residual stream stays O(1) at any
    depth (else a deep random model's logits collapse onto a few tokens)."""
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in weight_shapes(s).items():
        if name.endswith("norm.weight"):
            a = 1 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif name.endswith("bias"):
            a = 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif name == "model.embed_tokens.weight":
            a = rng.standard_normal(shape, dtype=np.float32)
        else:
            scale = 3.0 if name == "lm_head.weight" else 2.0 if "q_proj" in name or "k_proj" in name else 1.0
            if "o_proj" in name or "down_proj" in name:
                scale /= np.sqrt(2 * s["num_hidden_layers"])
            a = rng.standard_normal(shape, dtype=np.float32) * (scale / np.sqrt(shape[1]))
        tensors[name] = (bf16_bits(a), "BF16")
    return write_model_folder(path, s, tensors, bos_token_id=1, eos_token_id=2, mask_token_id=s["vocab_size"] - 1)


def log_softmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    a = a - a.max(-1, keepdims=True)
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


def compare(ref_logits, got_logits, ref_gen, got_gen) -> dict:
    kls, top1 = [], []
    for r, g in zip(ref_logits, got_logits):
        p, q = log_softmax(r), log_softmax(g)
        kls.append((np.exp(p) * (p - q)).sum(-1))
        top1.append(r.argmax(-1) == g.argmax(-1))
    kl = np.concatenate(kls)
    prefix = []
    for a, b in zip(ref_gen, got_gen):
        n = 0
        while n < min(len(a.token_ids), len(b.token_ids)) and a.token_ids[n] == b.token_ids[n]:
            n += 1
        prefix.append(n)
    return {"kl_mean": float(kl.mean()), "kl_p95": float(np.percentile(kl, 95)),
            "top1_agreement": float(np.concatenate(top1).mean()),
            "generation_identical": float(np.mean([a.token_ids == b.token_ids for a, b in zip(ref_gen, got_gen)])),
            "generation_common_prefix_mean": float(np.mean(prefix)),
            "tokens_per_forward": float(np.mean([g.tokens_per_forward for g in got_gen]))}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shape", choices=("tiny", "1.5b"), default="tiny")
    ap.add_argument("--layers", type=int, help="cut the model to this many layers (memory / time)")
    ap.add_argument("--formats", default="int8,int4",
                    help="int8, int4, dense; a +head8 suffix (RTN only) also stores the lm_head as int8")
    ap.add_argument("--methods", default="rtn,gptq,awq")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--sequences", type=int, default=8, help="held-out sequences for the logit metrics")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--out")
    a = ap.parse_args()
    # Untied: a random TIED model predicts its input token (the embedding dominates
    # the residual stream, and the lm_head is that embedding), which says nothing.
    s = dict(TINY if a.shape == "tiny" else QWEN25_1_5B, tie_word_embeddings=False)
    if a.layers:
        s["num_hidden_layers"] = a.layers
    name = f"fastdllm_quality3_{a.shape}_{s['num_hidden_layers']}l"
    float_dir = write_gaussian_model(os.path.join(a.dir, name), s)
    rng = np.random.default_rng(123)
    seqs = [list(map(int, rng.integers(3, s["vocab_size"] - 1, a.seq_len))) for _ in range(a.sequences)]
    prompts = [q[:32] for q in seqs]
    gen = dict(max_new_tokens=a.gen_tokens, threshold=0.9)

    def measure(engine):
        t = time.perf_counter()
        logits = [engine.logits(q) for q in seqs]
        outs = engine.generate_ids(prompts, **gen)
        return logits, outs, time.perf_counter() - t

    with fastdllm_rt.Engine(float_dir, max_batch_size=a.sequences) as e:
        ref_logits, ref_gen, _ = measure(e)
    results = []
    for spec in a.formats.split(","):
        fmt, head = spec.split("+")[0], "int8" if spec.endswith("+head8") else None
        for method in a.methods.split(",") if not head else ["rtn"]:
            t0 = time.perf_counter()
            group = 0 if fmt == "int8" else a.group_size
            if method == "rtn":
                engine = fastdllm_rt.Engine(float_dir, quantize=None if fmt == "dense" else fmt,
                                            group_size=None if fmt == "dense" else group, lm_head=head,
                                            max_batch_size=a.sequences)
            else:
                qdir = os.path.join(a.dir, f"{name}_{fmt}_{method}")
                quantize_model(float_dir, qdir, format=fmt, group_size=group, method=method,
                               calib_samples=a.calib_samples, calib_seq_len=a.seq_len, progress=False)
                engine = fastdllm_rt.Engine(qdir, max_batch_size=a.sequences)
            quant_s = time.perf_counter() - t0
            with engine:
                logits, outs, _ = measure(engine)
            r = dict(format=fmt, lm_head=head or "bf16", method=method, group_size=group or None,
                     quantize_s=round(quant_s, 2),
                     weight_bytes=engine.model.weight_bytes, **compare(ref_logits, logits, ref_gen, outs))
            results.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    emit({"bench": "quant_quality", "device": {"cpu": cpu_name(), "isa": fastdllm_rt.cpu_isa()},
          "shape": dict(s, name=a.shape), "reference": "the same model with its bf16 weights (float engine)",
          "sequences": a.sequences, "seq_len": a.seq_len, "generation": gen,
          "float_tokens_per_forward": float(np.mean([g.tokens_per_forward for g in ref_gen])),
          "note": "random Gaussian weights: a pessimistic proxy (no outlier structure, flat distributions)",
          "results": results}, a.out)


if __name__ == "__main__":
    main()
