"""The FastAPI app: /v1/chat/completions, /v1/completions (streamed as
server-sent events or not), /v1/models, /health, /metrics.

Streaming follows diffusion decoding honestly: a delta is sent when the
contiguous decoded prefix grows, and is never revised. A client that goes
away cancels its request at once (its KV pages are freed); errors use
OpenAI's JSON error shape."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..engine import Engine, GenerationError
from ..errors import LoadError
from .metrics import ServerMetrics
from .protocol import APIError, Parsed, parse, param_of


class ReplicaHeader:
    """Adds X-Fastdllm-Replica (host:pid: which process answered, behind a
    proxy). Plain ASGI rather than BaseHTTPMiddleware, which would hide a
    client's disconnect from the routes."""

    def __init__(self, app):
        self.app = app
        self.value = f"{socket.gethostname()}:{os.getpid()}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=list(message.get("headers", [])) + [(b"x-fastdllm-replica",
                                                                                    self.value)])
            await send(message)

        await self.app(scope, receive, tagged)


async def _cancel_on_disconnect(request: Request, stream) -> None:
    """A non-streamed request whose client went away stops decoding (its pages go back)."""
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)
    stream.close()


def _usage(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": len(result.token_ids),
            "total_tokens": result.prompt_tokens + len(result.token_ids)}


def _stats(result) -> dict:
    """The extension field: what the diffusion decoder did for this response."""
    return {"forwards": result.num_forwards, "tokens_per_forward": round(result.tokens_per_forward, 4),
            "cached_prompt_tokens": result.cached_prompt_tokens}


def create_app(engine: Engine, model_name: str, api_key: Optional[str] = None, max_queue: int = 256) -> FastAPI:
    """An app serving `engine` as `model_name`. api_key: required as a bearer
    token when set. max_queue: requests waiting beyond this get 503."""
    app = FastAPI(title="fastdllm_rt", docs_url=None, redoc_url=None)
    app.add_middleware(ReplicaHeader)
    metrics = ServerMetrics(engine)
    created = int(time.time())
    cap = engine.max_seq_len

    def fail(endpoint: str, e: APIError) -> JSONResponse:
        metrics.requests.labels(endpoint, str(e.status)).inc()
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {api_key}":
            raise APIError(401, "Incorrect or missing API key (send 'Authorization: Bearer KEY')",
                           type="authentication_error", code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            check_key(request)
        except APIError as e:
            return fail("models", e)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "fastdllm_rt"}]}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def body_of(request: Request):
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise APIError(400, "the request body is not valid JSON") from None

    def open_stream(p: Parsed):
        """Submits the request (bad parameters raise here, before anything runs)."""
        if engine.stats()["requests_waiting"] >= max_queue:
            raise APIError(503, f"the server is busy ({max_queue} requests already wait); retry shortly",
                           type="server_error", code="queue_full", headers={"Retry-After": "1"})
        try:
            if isinstance(p.prompt, list) and p.prompt and isinstance(p.prompt[0], int):
                return engine.astream_ids(p.prompt, **p.gen)
            return engine.astream(p.prompt, chat=p.chat, **p.gen)
        except (ValueError, TypeError, LoadError) as e:
            msg = str(e)
            raise APIError(400, msg, param=param_of(msg, p)) from None
        except MemoryError as e:  # MemoryBudgetError: this request can never fit
            raise APIError(400, str(e), param="max_tokens") from None

    async def complete(request: Request, chat: bool):
        endpoint = "chat.completions" if chat else "completions"
        try:
            check_key(request)
            p = parse(await body_of(request), chat, model_name, cap)
            s = open_stream(p)
        except APIError as e:
            return fail(endpoint, e)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        now = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        if not p.stream:
            watcher = asyncio.ensure_future(_cancel_on_disconnect(request, s))
            try:
                text = "".join([d async for d in s])
            except GenerationError as e:
                return fail(endpoint, APIError(500, str(e), type="server_error"))
            finally:
                watcher.cancel()
            r = s.result
            if r is None:  # cancelled: the client disconnected, nobody reads this
                return fail(endpoint, APIError(499, "the client closed the connection", type="client_closed"))
            metrics.finished(r)
            metrics.requests.labels(endpoint, "200").inc()
            choice = {"index": 0, "finish_reason": r.finish_reason}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice.update(text=text, logprobs=None)
            return {"id": rid, "object": kind, "created": now, "model": model_name, "choices": [choice],
                    "usage": _usage(r), "fastdllm": _stats(r)}

        chunk_kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choices, **extra) -> str:
            return "data: " + json.dumps({"id": rid, "object": chunk_kind, "created": now, "model": model_name,
                                          "choices": choices, **extra}) + "\n\n"

        def piece(text=None, finish=None, role=False) -> dict:
            if chat:
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
                return {"index": 0, "delta": delta, "finish_reason": finish}
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

        async def events():
            t0 = time.monotonic()
            first = True
            try:
                if chat:
                    yield event([piece(role=True)])
                async for delta in s:
                    if first:
                        metrics.ttft.observe(time.monotonic() - t0)
                        first = False
                    yield event([piece(delta)])
                r = s.result
                metrics.finished(r)
                metrics.requests.labels(endpoint, "200").inc()
                yield event([piece(finish=r.finish_reason)], fastdllm=_stats(r))
                if p.include_usage:
                    yield event([], usage=_usage(r))
                yield "data: [DONE]\n\n"
            except GenerationError as e:
                metrics.requests.labels(endpoint, "500").inc()
                yield "data: " + json.dumps(APIError(500, str(e), type="server_error").body()) + "\n\n"
            finally:
                s.close()  # the client went away (or we are done): the pages go back now

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    return app
