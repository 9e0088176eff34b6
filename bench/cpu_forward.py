"""CPU forward benchmark at the Qwen2.5-1.5B shape (random bf16 weights).

Times one forward of 32, 8 and 1 new tokens over a 512-token cached prefix for
fastdllm_rt and for a plain PyTorch forward of the same model (same dtype, same
threads, same rows through lm_head), in the same run, and a STREAM-style triad
so that every figure stands beside its memory floor. Prints JSON.

--formats times the same model in several layer-weight formats in one run
(dense bf16, and int8 / int4 quantized at load with RTN: weight-only, the
lm_head stays bf16), each beside its own weight-streaming floor.

    python bench/cpu_forward.py [--model-dir DIR] [--reps N] [--formats dense,int4,int8] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import fastdllm_rt  # noqa: E402
from bench_util import cpu_name, emit, flops, time_pair  # noqa: E402
from qwen_shapes import QWEN25_1_5B, weight_bytes_per_forward, write_random_bf16_model  # noqa: E402
from torch_qwen2 import TorchQwen2  # noqa: E402

CACHED = 512
CASES = [(32, 8), (8, 8), (1, 1)]  # (new tokens, rows through lm_head: a sub-block's masked positions)


def gemm_flops(s: dict, new: int, rows: int) -> dict:
    """FLOP of each GEMM op of one forward (all layers), keyed as the profiler names them."""
    H, I, hd, L, V = s["hidden_size"], s["intermediate_size"], s["head_dim"], s["num_hidden_layers"], s["vocab_size"]
    q, kv = s["num_attention_heads"] * hd, s["num_key_value_heads"] * hd
    return {"linear_qkv": 2 * new * H * (q + 2 * kv) * L, "linear_o": 2 * new * q * H * L,
            "linear_gate_up_silu_mul": 2 * new * H * 2 * I * L, "linear_down": 2 * new * I * H * L,
            "lm_head_top2": 2 * rows * H * V}


def triad_gbs(threads: int, mb: int = 256, reps: int = 5) -> float:
    """a = b + 2c over arrays of mb MiB each (3 streams), best of reps, in GB/s."""
    torch.set_num_threads(threads)
    n = mb * (1 << 20) // 4
    a, b, c = torch.empty(n), torch.rand(n), torch.rand(n)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.add(b, c, alpha=2.0, out=a)
        best = min(best, time.perf_counter() - t)
    return 3 * n * 4 / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "fastdllm_bench_qwen2.5_1.5b_bf16"))
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--formats", default="dense",
                    help="comma-separated layer-weight formats to time in this run: dense, int8, int4; "
                         "a +head8 suffix (int4+head8) also stores the lm_head as int8")
    ap.add_argument("--group-size", type=int, default=128, help="int4 group size (int8 is per channel)")
    ap.add_argument("--out")
    a = ap.parse_args()
    s = QWEN25_1_5B
    formats = a.formats.split(",")
    for f in formats:
        if f.split("+")[0] not in ("dense", "int8", "int4") or f.split("+")[1:] not in ([], ["head8"]):
            ap.error(f"--formats: unknown format {f!r}")
    layer = {f: f.split("+")[0] for f in formats}
    head = {f: "int8" if f.endswith("+head8") else "dense" for f in formats}
    t0 = time.perf_counter()
    write_random_bf16_model(a.model_dir, s)
    fastdllm_rt._C.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    T = fastdllm_rt._C._testing
    rng = np.random.default_rng(0)
    groups = {f: (0 if layer[f] == "int8" else a.group_size) for f in formats}
    setups = []  # per format: (model, pool, table, load seconds)
    for f in formats:
        t1 = time.perf_counter()
        model = fastdllm_rt.load_model(a.model_dir, quantize=None if layer[f] == "dense" else layer[f],
                                       group_size=None if layer[f] == "dense" else groups[f],
                                       lm_head=None if head[f] == "dense" else head[f])
        load_s = time.perf_counter() - t1
        pool = T.make_pool(model, 16, (CACHED + 64) // 16 + 4, "bfloat16")  # the engine's KV dtype for bf16 models
        table = T.PageTable(pool)
        table.reserve_tokens(CACHED + 32)
        for c0 in range(0, CACHED, 128):  # fill the cache: block-causal prefill in chunks
            ids = rng.integers(0, 151000, 128).astype(np.int32)
            pos = np.arange(c0, c0 + 128, dtype=np.int32)
            T.forward(model, pool, [dict(tokens=ids, positions=pos, pages=list(table.pages), write_offset=c0,
                                         kv_limit=np.full(128, c0 + 128, np.int32), rows=np.zeros(0, np.int32))])
        setups.append((model, pool, table, load_s))
    setup_s = time.perf_counter() - t0

    wbytes = {f: weight_bytes_per_forward(s, layer_format=layer[f], group_size=groups[f], lm_head=head[f])
              for f in formats}
    bw = triad_gbs(a.threads)
    results = []
    ref = None
    if not a.skip_torch:
        from safetensors.torch import load_file
        ref = TorchQwen2(s, load_file(os.path.join(a.model_dir, "model.safetensors")))
        past = [(torch.randn(s["num_key_value_heads"], CACHED, s["head_dim"]).to(torch.bfloat16),
                 torch.randn(s["num_key_value_heads"], CACHED, s["head_dim"]).to(torch.bfloat16))
                for _ in range(s["num_hidden_layers"])]
    for new, rows in CASES:
        ids = rng.integers(0, 151000, new).astype(np.int32)
        pos = np.arange(CACHED, CACHED + new, dtype=np.int32)
        lrows = np.arange(new - rows, new, dtype=np.int32)
        reps = a.reps if new > 1 else 2 * a.reps
        # Every side does what a greedy denoising step needs: the forward, then
        # per lm_head row the argmax token and its softmax probability (ours:
        # the lm_head fused with that reduction). One sequence's denoising
        # step: the new tokens over the cached prefix.
        fns, steps = [], []
        for model, pool, table, _ in setups:
            step = [dict(tokens=ids, positions=pos, pages=list(table.pages), write_offset=CACHED,
                         kv_limit=np.full(new, CACHED + new, np.int32), rows=lrows)]
            steps.append(step)
            fns.append(lambda model=model, pool=pool, step=step: T.forward(model, pool, step, "top2"))
        if ref is not None:
            tids = torch.from_numpy(ids.astype(np.int64))
            fns.append(lambda: torch.softmax(ref.forward(tids, CACHED, past, rows)[0].float(), -1).max(-1))
        timings = time_pair(fns, reps)
        for fi, f in enumerate(formats):
            model, pool, table, _ = setups[fi]
            ours = timings[fi]
            # Per-op breakdown: a few more forwards with the op timers on.
            fastdllm_rt._C.profile_start()
            for _ in range(3):
                T.forward(model, pool, steps[fi], "top2")
            prof = fastdllm_rt._C.profile_stop()
            per_op = {k: round(1e3 * sec / 3, 3) for k, (_, sec) in sorted(prof.items(), key=lambda kv: -kv[1][1])}
            # What each GEMM achieved: its FLOP in the forward over its measured time.
            op_flop = gemm_flops(s, new, rows)
            if "linear_gate_up" in per_op:  # the unfused MLP path names its two ops apart
                op_flop["linear_gate_up"] = op_flop.pop("linear_gate_up_silu_mul")
            per_op_tflops = {k: round(op_flop[k] / (per_op[k] / 1e3) / 1e12, 3) for k in op_flop if per_op.get(k)}
            m = statistics.median(ours)
            entry = {"format": f, "group_size": groups[f] if f != "dense" else None, "new_tokens": new,
                     "fastdllm_rt_per_op_ms": per_op, "fastdllm_rt_per_op_tflops": per_op_tflops,
                     "cached_tokens": CACHED, "lm_head_rows": rows,
                     "gflop": flops(s, CACHED, new, rows) / 1e9, "fastdllm_rt_s": ours,
                     "fastdllm_rt_median_ms": 1e3 * m, "weight_bytes_per_forward": wbytes[f]}
            entry["fastdllm_rt_gflops"] = entry["gflop"] / m
            entry["fastdllm_rt_weight_gbs"] = wbytes[f] / m / 1e9
            if ref is not None:
                theirs = timings[-1]
                entry["torch_s"] = theirs
                entry["torch_median_ms"] = 1e3 * statistics.median(theirs)
                entry["speedup_vs_torch"] = statistics.median(theirs) / m
            if f != "dense" and "dense" in formats:
                entry["speedup_vs_our_bf16"] = statistics.median(timings[formats.index("dense")]) / m
            results.append(entry)
            print(json.dumps({k: v for k, v in entry.items() if not k.endswith("_s")}), file=sys.stderr, flush=True)
        bw = max(bw, triad_gbs(a.threads))  # best triad seen so far: the floor is the machine at its best

    bw = max(bw, triad_gbs(a.threads))
    for entry in results:
        m = statistics.median(entry["fastdllm_rt_s"])
        floor = entry["weight_bytes_per_forward"] / (bw * 1e9)
        entry["weight_floor_ms"] = 1e3 * floor
        entry["fastdllm_rt_vs_floor"] = m / floor
    report = {
        "bench": "cpu_forward",
        "device": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": a.threads,
                   "isa": fastdllm_rt.cpu_isa(), "torch": torch.__version__,
                   "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "shape": dict(s, name="Qwen2.5-1.5B"),
        "dtype": "bfloat16 weights (fastdllm_rt: fp32 activations unless the ISA path says otherwise); "
                 "int8 / int4: layer matrices quantized at load (RTN, weight-only; bf16 activations on AVX-512 "
                 "BF16 / AMX machines, fp32 on AVX2), embedding / lm_head bf16",
        "formats": formats,
        "load_s": {f: st[3] for f, st in zip(formats, setups)},
        "triad_gbs": bw,
        "triad_note": "best of STREAM-style triads (a = b + 2c, 3 x 256 MiB, torch, all threads) taken before, "
                      "between and after the cases",
        "setup_s": setup_s,
        "results": results,
    }
    emit(report, a.out)


if __name__ == "__main__":
    main()
