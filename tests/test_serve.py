"""The OpenAI-compatible server, driven by the real `openai` client against a
live server on 127.0.0.1 (a free port, started and stopped by the tests):
streamed and non-streamed chat and completions equal Engine.generate for the
same settings; 8 concurrent streams each equal their single-request output; a
client that disconnects leaves no page in use; every error status."""
import json
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastdllm_rt import Engine  # noqa: E402
from fastdllm_rt.serve import create_app  # noqa: E402
from fastdllm_rt.serve.server import BackgroundServer  # noqa: E402

MODEL = "demo"
MSGS = [{"role": "user", "content": "Tell me about diffusion."}]


@pytest.fixture(scope="module")
def engine(demo_dir):
    e = Engine(demo_dir, max_batch_size=8)
    yield e
    e.close()


@pytest.fixture(scope="module")
def server(engine):
    with BackgroundServer(create_app(engine, MODEL)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def pages_free(engine, timeout=10.0):
    t0 = time.monotonic()
    while engine.stats()["pages_in_use"] and time.monotonic() - t0 < timeout:
        time.sleep(0.02)
    return engine.stats()["pages_in_use"] == 0


def test_chat_equals_engine_generate(client, engine):
    want = engine.generate([MSGS], max_new_tokens=40)[0]
    r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=40)
    assert r.choices[0].message.content == want.text and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == want.finish_reason
    assert r.usage.completion_tokens == len(want.token_ids) and r.usage.prompt_tokens == want.prompt_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    stats = r.model_extra["fastdllm"]
    assert stats["forwards"] == want.num_forwards and stats["tokens_per_forward"] > 0


def test_chat_stream_equals_engine_generate(client, engine):
    want = engine.generate([MSGS], max_new_tokens=48, threshold=0.7)[0]
    chunks = list(client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=48, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"threshold": 0.7}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want.text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == want.finish_reason
    assert finals[0].model_extra["fastdllm"]["forwards"] == want.num_forwards
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(want.token_ids)


def test_completions_equal_engine_generate(client, engine):
    prompt = "Once upon a time"
    want = engine.generate([prompt], chat=False, max_new_tokens=32, temperature=0.8, seed=7, top_p=0.9)[0]
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=32, temperature=0.8, seed=7, top_p=0.9)
    assert r.choices[0].text == want.text
    s = client.completions.create(model=MODEL, prompt=prompt, max_tokens=32, temperature=0.8, seed=7, top_p=0.9,
                                  stream=True)
    assert "".join(c.choices[0].text for c in s if c.choices) == want.text
    ids = engine.encode_prompt(prompt, chat=False)
    r = client.completions.create(model=MODEL, prompt=ids, max_tokens=32, temperature=0.8, seed=7, top_p=0.9)
    assert r.choices[0].text == want.text


def test_stop_strings(client, engine):
    want = engine.generate([MSGS], max_new_tokens=64, stop=["e"])[0]
    r = client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=64, stop="e")
    assert r.choices[0].message.content == want.text and "e" not in want.text


def test_eight_concurrent_streams_equal_their_single_outputs(client, engine):
    prompts = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(8)]
    want = [engine.generate([p], max_new_tokens=40 + 4 * i)[0].text for i, p in enumerate(prompts)]
    got = [None] * 8

    def run(i):
        s = client.chat.completions.create(model=MODEL, messages=prompts[i], max_tokens=40 + 4 * i, stream=True)
        got[i] = "".join(c.choices[0].delta.content or "" for c in s if c.choices)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == want
    assert max(engine.stats()["batch_size_histogram"]) > 1  # they shared forwards
    assert pages_free(engine)


def test_disconnect_frees_pages(server, engine):
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 2000, "stream": True, "threshold": 1.0}
    cancelled = engine.stats()["requests_cancelled"]
    with httpx.Client(timeout=30) as h:
        with h.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():  # up to the first text: the request is usually running then
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break
            # On a loaded machine the server may finish the request before this
            # client reads its first delta: only a running request can be cut off.
            running = engine.stats()["requests_running"] > 0
            if running:
                assert engine.stats()["pages_in_use"] > 0
        # leaving the block closes the connection mid-stream
    assert pages_free(engine)
    assert engine.stats()["requests_running"] == 0
    if running:
        assert engine.stats()["requests_cancelled"] == cancelled + 1


def test_models_health_metrics(client, server):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=8)
    text = httpx.get(server.url + "/metrics").text
    for name in ("fastdllm_requests_total", "fastdllm_generated_tokens_total", "fastdllm_model_forwards_total",
                 "fastdllm_tokens_per_forward_bucket", "fastdllm_batch_size_forwards", "fastdllm_queue_length",
                 "fastdllm_kv_pages_in_use"):
        assert name in text, name
    assert 'fastdllm_requests_total{endpoint="chat.completions",status="200"}' in text


@pytest.mark.parametrize("body,status,param", [
    ({"temperature": 5}, 400, "temperature"),
    ({"n": 2}, 400, "n"),
    ({"max_tokens": 0}, 400, "max_tokens"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ({"threshold": 1.5}, 400, "threshold"),
    ({"block_size": 12}, 400, "block_size"),
    ({"sampler": "magic"}, 400, "sampler"),
    ({"model": "gpt-4"}, 404, "model"),
])
def test_errors_have_openai_shape_and_status(server, body, status, param):
    req = {"model": MODEL, "messages": MSGS, "max_tokens": 8}
    req.update(body)
    r = httpx.post(server.url + "/v1/chat/completions", json=req)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"]


def test_bad_json_is_400(server):
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_openai_client_sees_the_errors(client):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=MODEL, messages=MSGS, temperature=3)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MSGS)


def test_api_key_and_queue_full(engine):
    with BackgroundServer(create_app(engine, MODEL, api_key="s3cret")) as s:
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=4)
        assert httpx.get(s.url + "/v1/models").status_code == 401
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=4).choices[0].message.content
    with BackgroundServer(create_app(engine, MODEL, max_queue=0)) as s:  # every request finds the queue full
        r = httpx.post(s.url + "/v1/chat/completions", json={"model": MODEL, "messages": MSGS})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_full"


def test_engine_still_usable_after_errors(client, engine):
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=10 ** 9)
    assert client.chat.completions.create(model=MODEL, messages=MSGS, max_tokens=8).choices[0].message.content
    assert pages_free(engine)


def test_sigterm_drains_in_flight_requests(demo_dir):
    """fastdllm-rt serve as users run it: SIGTERM lets a running stream finish,
    then the process exits."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "fastdllm_rt.cli", "serve", demo_dir, "--port", str(port),
                             "--model-name", MODEL, "--drain-timeout", "60"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = {"model": MODEL, "messages": MSGS, "max_tokens": 300, "threshold": 1.0, "stream": True}
        got, done, finish = [], False, None
        with httpx.Client(timeout=60) as h, h.stream("POST", url + "/v1/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if line == "data: [DONE]":
                    done = True
                    break
                if line.startswith("data: {"):
                    ev = json.loads(line[6:])
                    if not got:
                        proc.send_signal(signal.SIGTERM)  # mid-stream
                    got.append(ev)
                    if ev["choices"] and ev["choices"][0].get("finish_reason"):
                        finish = ev["choices"][0]["finish_reason"]
        assert done and finish == "length" and len(got) > 2
        # uvicorn re-raises the captured SIGTERM once drained: the exit is "terminated by SIGTERM"
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_non_streamed_disconnect_frees_pages(server, engine):
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 3000, "threshold": 1.0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=body, timeout=1.0)  # gives up, closes
    assert pages_free(engine)
    assert engine.stats()["requests_running"] == 0
