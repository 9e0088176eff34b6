"""Running the app with uvicorn: one engine, one process. SIGTERM / Ctrl-C stop
accepting connections and let in-flight requests finish, for up to
drain_timeout seconds; then the engine closes (what still runs ends with an
error and frees its pages)."""
from __future__ import annotations

import os
import threading
from typing import Optional

from ..engine import Engine
from .app import create_app


def build(model_dir: str, model_name: Optional[str] = None, api_key: Optional[str] = None, max_queue: int = 256,
          **engine_kwargs):
    """(engine, app) for a model folder."""
    engine = Engine(model_dir, **engine_kwargs)
    name = model_name or os.path.basename(os.path.normpath(model_dir))
    return engine, create_app(engine, name, api_key=api_key, max_queue=max_queue)


def serve(model_dir: str, host: str = "127.0.0.1", port: int = 8000, model_name: Optional[str] = None,
          api_key: Optional[str] = None, max_queue: int = 256, drain_timeout: float = 30.0,
          log_level: str = "info", **engine_kwargs) -> None:
    import uvicorn

    engine, app = build(model_dir, model_name, api_key, max_queue, **engine_kwargs)
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                      timeout_graceful_shutdown=drain_timeout)).run()
    finally:
        engine.close()


class BackgroundServer:
    """A server on a thread of this process (tests, notebooks): start(),
    .url, stop(). Port 0 picks a free port."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, drain_timeout: float = 5.0):
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.url = f"http://{host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    timeout_graceful_shutdown=drain_timeout))
        self.thread = threading.Thread(target=self.server.run, name="fastdllm-serve", daemon=True)

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        import time

        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"the server at {self.url} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
