"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import json
import platform
import time


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def emit(report: dict, out_path: str = None) -> None:
    """Prints the report as JSON and, if asked, writes it to out_path."""
    text = json.dumps(report, indent=1)
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text + "\n")


def flops(s: dict, cached: int, new: int, rows: int) -> float:
    """FLOP of one forward: projections and MLP per new token, attention over
    cached + new keys, lm_head on the rows that need logits."""
    H, I, hd = s["hidden_size"], s["intermediate_size"], s["head_dim"]
    nh, nkv, layers, V = s["num_attention_heads"], s["num_key_value_heads"], s["num_hidden_layers"], s["vocab_size"]
    per_token = layers * 2 * (H * (nh + 2 * nkv) * hd + nh * hd * H + 3 * H * I)
    attn = layers * 2 * 2 * nh * hd * new * (cached + new)
    return new * per_token + attn + 2 * rows * H * V


def time_pair(fns, reps: int):
    """Times each function reps times, alternating between them rep by rep, so
    that drift in the machine's speed (shared VMs) hits all of them alike."""
    for fn in fns:
        fn()  # warm-up
    out = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            out[i].append(time.perf_counter() - t)
    return out
