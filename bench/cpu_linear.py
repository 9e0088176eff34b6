"""The CPU GEMM kernels alone at the Qwen2.5-1.5B layer shapes: every ISA path
this CPU has (FASTDLLM_ISA=avx2 / avx512 / amx) against PyTorch's bf16 linear
(oneDNN) in the same run, for the token counts of decoding (1, 8, 32) and of
batched decoding / prefill (128, 512). Weights are packed bf16 as the engine
stores them; times are medians of alternating runs. Prints JSON with ms, the
weight stream in GB/s and the achieved TFLOP/s.

    python bench/cpu_linear.py [--rows 1,8,32,128,512] [--reps 7] [--out FILE]
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
from fastdllm_rt._C import _testing as T  # noqa: E402

# (name, N, K, fused SiLU*mul): the 1.5B layer's GEMMs and its lm_head
SHAPES = [("qkv", 2048, 1536, False), ("o", 1536, 1536, False), ("gate_up_silu_mul", 17920, 1536, True),
          ("down", 1536, 8960, False), ("lm_head", 151936, 1536, False)]


def isas() -> list:
    best = fastdllm_rt.cpu_isa()
    return ["avx2"] + (["avx512"] if best != "avx2" else []) + (["amx"] if best == "amx_bf16" else [])


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", default="1,8,32,128,512")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out")
    a = ap.parse_args()
    fastdllm_rt._C.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    results = []
    for name, n, k, silu in SHAPES:
        w = torch.randn(n, k).bfloat16()
        bits = w.view(torch.int16).numpy().view(np.uint16)
        if silu:
            packed = T.ops.pack_gate_up(bits[: n // 2], bits[n // 2:])
        else:
            packed = T.ops.pack_bf16(bits)
        for m in (int(r) for r in a.rows.split(",")):
            if name == "lm_head" and m > 32:
                continue  # the lm_head runs for the output rows only
            x = rng.standard_normal((m, k)).astype(np.float32)
            xt = torch.from_numpy(x).bfloat16()
            fns, labels = [], []
            for isa in isas():
                def ours(isa=isa):
                    os.environ["FASTDLLM_ISA"] = isa
                    if silu:
                        T.ops.linear_silu_mul(x, packed)
                    else:
                        T.ops.linear(x, packed, weight_dtype="bfloat16", packed=True)
                fns.append(ours)
                labels.append(isa)
            if silu:
                fns.append(lambda: torch.nn.functional.silu(xt @ w[: n // 2].T) * (xt @ w[n // 2:].T))
            else:
                fns.append(lambda: torch.nn.functional.linear(xt, w))
            labels.append("torch_bf16")
            times = time_pair(fns, a.reps)
            os.environ.pop("FASTDLLM_ISA", None)
            wbytes, flop = n * k * 2, 2 * m * n * k
            entry = {"gemm": name, "m": m, "n": n, "k": k}
            for label, t in zip(labels, times):
                med = statistics.median(t)
                entry[label] = {"ms": 1e3 * med, "weight_gbs": wbytes / med / 1e9, "tflops": flop / med / 1e12}
            results.append(entry)
            print({k2: (round(v["ms"], 3) if isinstance(v, dict) else v) for k2, v in entry.items()}, file=sys.stderr,
                  flush=True)
    emit({"bench": "cpu_linear", "device": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": a.threads,
                                            "isa": fastdllm_rt.cpu_isa(), "torch": torch.__version__},
          "note": "weights packed bf16 as the engine stores them; ms are medians of alternating runs",
          "results": results}, a.out)


if __name__ == "__main__":
    main()
