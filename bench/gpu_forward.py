"""GPU forward benchmark at the Qwen2.5-1.5B and 7B shapes (random bf16 weights).

Times one greedy denoising step (the forward, then per lm_head row the argmax
token and its probability on the host) of 32, 8 and 1 new tokens over a
512-token cache for fastdllm_rt (device="cuda") and for the plain PyTorch forward of the same model on the same GPU (bf16,
eager), alternating runs, beside a device triad (a = b + 2c) giving the HBM
bandwidth and so the weight-streaming floor. Prints JSON. Needs a CUDA device.

    python bench/gpu_forward.py [--shapes 1.5b,7b] [--reps N] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import fastdllm_rt  # noqa: E402
from bench_util import emit, flops, time_pair  # noqa: E402
from qwen_shapes import SHAPES, bench_model_dir, weight_bytes_per_forward, write_random_bf16_model  # noqa: E402
from torch_qwen2 import TorchQwen2  # noqa: E402

CACHED = 512
CASES = [(32, 8), (8, 8), (1, 1)]


def hbm_gbs(mb: int = 1024, reps: int = 10) -> float:
    n = mb * (1 << 20) // 4
    a, b, c = (torch.empty(n, device="cuda") for _ in range(3))
    best = float("inf")
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        torch.add(b, c, alpha=2.0, out=a)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 3 * n * 4 / best / 1e9


def bench_shape(name: str, s: dict, model_dir: str, reps: int, skip_torch: bool) -> dict:
    write_random_bf16_model(model_dir, s)
    model = fastdllm_rt.load_model(model_dir, device="cuda")
    T = fastdllm_rt._C._testing
    pool = T.make_pool(model, 16, (CACHED + 64) // 16 + 4, "bfloat16")  # the engine's KV dtype for bf16 models
    table = T.PageTable(pool)
    table.reserve_tokens(CACHED + 32)
    rng = np.random.default_rng(0)
    for c0 in range(0, CACHED, 128):
        T.forward(model, pool, [dict(tokens=rng.integers(0, 151000, 128).astype(np.int32),
                                     positions=np.arange(c0, c0 + 128, dtype=np.int32), pages=list(table.pages),
                                     write_offset=c0, kv_limit=np.full(128, c0 + 128, np.int32),
                                     rows=np.zeros(0, np.int32))])
    ref = past = None
    if not skip_torch:
        from safetensors.torch import load_file
        ref = TorchQwen2(s, load_file(os.path.join(model_dir, "model.safetensors")), device="cuda")
        past = [(torch.randn(s["num_key_value_heads"], CACHED, s["head_dim"], device="cuda").bfloat16(),
                 torch.randn(s["num_key_value_heads"], CACHED, s["head_dim"], device="cuda").bfloat16())
                for _ in range(s["num_hidden_layers"])]
    wbytes = weight_bytes_per_forward(s)
    bw = hbm_gbs()
    results = []
    for new, rows in CASES:
        ids = rng.integers(0, 151000, new).astype(np.int32)
        pos = np.arange(CACHED, CACHED + new, dtype=np.int32)
        lrows = np.arange(new - rows, new, dtype=np.int32)
        # One sequence's denoising step: the new tokens over the cached prefix.
        step = [dict(tokens=ids, positions=pos, pages=list(table.pages), write_offset=CACHED,
                     kv_limit=np.full(new, CACHED + new, np.int32), rows=lrows)]
        # Both sides do a greedy denoising step: the forward, then per lm_head row
        # the argmax token and its probability, on the host (ours: forward_top2,
        # a replayed CUDA graph after the first two calls of a shape).
        fns = [lambda: T.forward(model, pool, step, "top2")]
        if ref is not None:
            tids = torch.from_numpy(ids.astype(np.int64)).cuda()

            def torch_fwd():
                p, i = torch.softmax(ref.forward(tids, CACHED, past, rows)[0].float(), -1).max(-1)
                p.cpu(), i.cpu()
            fns.append(torch_fwd)
        t = time_pair(fns, reps)
        m = statistics.median(t[0])
        e = {"new_tokens": new, "cached_tokens": CACHED, "lm_head_rows": rows, "gflop": flops(s, CACHED, new, rows) / 1e9,
             "fastdllm_rt_s": t[0], "fastdllm_rt_median_ms": 1e3 * m, "fastdllm_rt_weight_gbs": wbytes / m / 1e9,
             "weight_floor_ms": 1e3 * wbytes / (bw * 1e9), "fastdllm_rt_vs_floor": m * bw * 1e9 / wbytes}
        if ref is not None:
            e["torch_s"] = t[1]
            e["torch_median_ms"] = 1e3 * statistics.median(t[1])
            e["speedup_vs_torch"] = statistics.median(t[1]) / m
        e["graph_runs"] = dict(model.graph_runs)
        results.append(e)
        print({k: v for k, v in e.items() if not k.endswith("_s")}, file=sys.stderr, flush=True)
    del model, ref
    torch.cuda.empty_cache()
    return {"shape": dict(s, name=name), "weight_bytes_per_forward": wbytes, "hbm_triad_gbs": bw, "results": results}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", default="1.5b,7b")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--model-root", default=tempfile.gettempdir())
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    if not fastdllm_rt.cuda_status()["available"]:
        sys.exit(fastdllm_rt.cuda_status()["message"])
    runs = []
    for key in a.shapes.split(","):
        name, s = SHAPES[key]
        runs.append(bench_shape(name, s, bench_model_dir(a.model_root, key), a.reps, a.skip_torch))
    emit({"bench": "gpu_forward", "device": {"gpu": torch.cuda.get_device_name(), "cuda": fastdllm_rt.cuda_status(),
                                             "torch": torch.__version__},
          "dtype": "bfloat16 weights, fp32 activations (fastdllm_rt); bfloat16 eager (PyTorch)", "runs": runs}, a.out)


if __name__ == "__main__":
    main()
