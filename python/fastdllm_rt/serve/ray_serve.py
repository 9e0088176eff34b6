"""Past one process: N engine replicas as a Ray Serve deployment behind the
same OpenAI routes. Each replica loads its own Engine (a Ray actor, its own
process) and builds the same FastAPI app; Ray's proxy spreads requests over
them (and autoscales them when asked).

    from fastdllm_rt.serve.ray_serve import deployment
    from ray import serve
    serve.run(deployment("MODEL_DIR", num_replicas=2, threads=1), route_prefix="/")

or from the shell: ``python -m fastdllm_rt.serve.ray_serve MODEL_DIR --replicas 2``.
See docs/deploy.md (one machine, several replicas, a cluster)."""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional


def deployment(model_dir: str, model_name: Optional[str] = None, num_replicas: int = 1,
               autoscaling_config: Optional[dict] = None, ray_actor_options: Optional[dict] = None,
               api_key: Optional[str] = None, max_queue: int = 256, max_ongoing_requests: int = 64,
               **engine_kwargs):
    """A bound Ray Serve application of the OpenAI app. autoscaling_config
    (Ray's: min_replicas, max_replicas, target_ongoing_requests, ...) replaces
    num_replicas; ray_actor_options sets each replica's resources (e.g.
    {"num_cpus": 4} or {"num_gpus": 1}); engine_kwargs go to each Engine
    (threads: the CPU threads of one replica)."""
    from ray import serve

    name = model_name or os.path.basename(os.path.normpath(model_dir))

    def build_app():  # evaluated on each replica when it starts
        from .server import build

        _, app = build(model_dir, name, api_key=api_key, max_queue=max_queue, **engine_kwargs)
        return app

    options = {"max_ongoing_requests": max_ongoing_requests}
    if autoscaling_config:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    if ray_actor_options:
        options["ray_actor_options"] = ray_actor_options

    @serve.deployment(name="fastdllm_rt", **options)
    @serve.ingress(build_app)
    class FastDLLMReplica:
        pass

    return FastDLLMReplica.bind()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Serve a model folder with N replicas on Ray Serve.")
    ap.add_argument("model_dir")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per replica")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--address", help="an existing Ray cluster (default: a local instance)")
    a = ap.parse_args(argv)
    import ray
    from ray import serve

    ray.init(address=a.address)
    serve.start(http_options={"host": a.host, "port": a.port})
    serve.run(deployment(a.model_dir, num_replicas=a.replicas, threads=a.threads,
                         ray_actor_options={"num_cpus": a.threads}), route_prefix="/")
    print(f"serving {a.model_dir} with {a.replicas} replicas at http://{a.host}:{a.port}/v1")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
