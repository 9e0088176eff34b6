"""Load test of the OpenAI-compatible server: for each concurrency level (1, 4,
16 by default), that many clients stream chat completions from a fixed
request mix (short and long answers, two thresholds) against a local server,
bounded by a request count and a time limit. Reports throughput, time to
first token and inter-delta latency percentiles, and checks that every
response completed ([DONE], a finish reason) and that no KV page is left in
use (/metrics). Prints JSON.

    python bench/serve_load.py [--model-dir DIR] [--levels 1,4,16] [--requests 32] [--out FILE]
    python bench/serve_load.py --url http://127.0.0.1:8000 --model NAME   # an already running server
Without --model-dir or --url it serves the demo model (tiny, random: the
figures then measure the serving path, not a real model's speed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_util import cpu_name, emit  # noqa: E402

MIX = [  # (prompt, max_tokens, threshold)
    ("Explain block diffusion in two sentences.", 48, 0.9),
    ("Write a long story about a lighthouse keeper.", 160, 0.9),
    ("List five prime numbers.", 32, 0.7),
    ("Describe the water cycle.", 96, 0.7),
]


def pct(xs, q):
    return round(float(np.percentile(xs, q)), 4) if xs else None


def one_request(client: httpx.Client, url: str, model: str, i: int) -> dict:
    prompt, max_tokens, threshold = MIX[i % len(MIX)]
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "threshold": threshold, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.monotonic()
    stamps, finish, usage, done = [], None, None, False
    with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return {"error": f"HTTP {r.status_code}: {r.read()[:200]!r}"}
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            ev = json.loads(line[6:])
            if "error" in ev:
                return {"error": ev["error"]["message"]}
            if ev.get("usage"):
                usage = ev["usage"]
            for c in ev.get("choices", []):
                if c["delta"].get("content"):
                    stamps.append(time.monotonic() - t0)
                if c.get("finish_reason"):
                    finish = c["finish_reason"]
    complete = done and finish in ("stop", "length") and usage is not None
    return {"ttft": stamps[0] if stamps else None, "gaps": list(np.diff(stamps)) if len(stamps) > 1 else [],
            "total": time.monotonic() - t0, "tokens": usage["completion_tokens"] if usage else 0,
            "complete": complete}


def run_level(url: str, model: str, clients: int, requests: int, time_limit: float) -> dict:
    out, lock, nxt = [], threading.Lock(), [0]
    deadline = time.monotonic() + time_limit

    def worker():
        with httpx.Client(timeout=120) as c:
            while time.monotonic() < deadline:
                with lock:
                    if nxt[0] >= requests:
                        return
                    i = nxt[0]
                    nxt[0] += 1
                r = one_request(c, url, model, i)
                with lock:
                    out.append(r)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ok = [r for r in out if "error" not in r]
    gaps = [g for r in ok for g in r["gaps"]]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    tokens = sum(r["tokens"] for r in ok)
    return {"clients": clients, "requests": len(out), "errors": [r["error"] for r in out if "error" in r][:3],
            "all_complete": all(r.get("complete") for r in out) and len(ok) == len(out), "wall_s": round(wall, 3),
            "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 2),
            "requests_per_s": round(len(ok) / wall, 3),
            "ttft_s": {"p50": pct(ttft, 50), "p90": pct(ttft, 90), "p99": pct(ttft, 99)},
            "inter_delta_s": {"p50": pct(gaps, 50), "p90": pct(gaps, 90), "p99": pct(gaps, 99)},
            "request_s": {"p50": pct([r["total"] for r in ok], 50), "p90": pct([r["total"] for r in ok], 90)}}


def pages_in_use(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("fastdllm_kv_pages_in_use "):
            return float(line.split()[1])
    raise RuntimeError("no fastdllm_kv_pages_in_use in /metrics")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir")
    ap.add_argument("--url")
    ap.add_argument("--model", default="bench")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument("--requests", type=int, default=32, help="requests per level")
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds per level")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--out")
    a = ap.parse_args()
    server = engine = None
    url, model = a.url, a.model
    if url is None:
        import fastdllm_rt
        from fastdllm_rt.serve import create_app
        from fastdllm_rt.serve.server import BackgroundServer
        model_dir = a.model_dir
        if model_dir is None:
            from fastdllm_rt.demo import write_demo_model
            model_dir = write_demo_model(os.path.join(tempfile.gettempdir(), "fastdllm_rt_demo_model"))
        engine = fastdllm_rt.Engine(model_dir, max_batch_size=a.max_batch_size)
        server = BackgroundServer(create_app(engine, model)).start()
        url = server.url
    levels = []
    try:
        for c in map(int, a.levels.split(",")):
            lv = run_level(url, model, c, a.requests, a.time_limit)
            time.sleep(0.2)
            lv["pages_in_use_after"] = pages_in_use(url)
            levels.append(lv)
            print(json.dumps(lv), file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.stop()
            engine.close()
    emit({"bench": "serve_load", "device": {"cpu": cpu_name(), "cores": os.cpu_count()},
          "server": "in-process (uvicorn thread)" if a.url is None else a.url,
          "model_dir": a.model_dir or ("demo" if a.url is None else None), "mix": MIX,
          "max_batch_size": a.max_batch_size, "levels": levels,
          "checks": {"all_complete": all(lv["all_complete"] for lv in levels),
                     "no_pages_leaked": all(lv["pages_in_use_after"] == 0 for lv in levels)}}, a.out)


if __name__ == "__main__":
    main()
