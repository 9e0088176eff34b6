"""Two engine replicas on a local Ray Serve instance behind the OpenAI routes:
streamed chat completions through them equal the engine's own output, and
both replicas answer. Marked slow (Ray takes a while to start)."""
import socket

import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from fastdllm_rt import Engine  # noqa: E402
from fastdllm_rt.serve.ray_serve import deployment  # noqa: E402

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_replicas_stream_through_ray_serve(demo_dir):
    msgs = [{"role": "user", "content": "Tell me about diffusion."}]
    with Engine(demo_dir) as e:
        want = e.generate([msgs], max_new_tokens=40)[0].text
    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(deployment(demo_dir, model_name="demo", num_replicas=2, threads=1,
                             ray_actor_options={"num_cpus": 0.5}), route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        s = client.chat.completions.create(model="demo", messages=msgs, max_tokens=40, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in s if c.choices) == want
        replicas = set()
        for _ in range(30):
            r = httpx.post(url + "/v1/chat/completions", timeout=120,
                           json={"model": "demo", "messages": msgs, "max_tokens": 8})
            assert r.status_code == 200
            replicas.add(r.headers["x-fastdllm-replica"])
            if len(replicas) == 2:
                break
        assert len(replicas) == 2, replicas
    finally:
        serve.shutdown()
        ray.shutdown()
