"""An OpenAI-compatible HTTP server on the batched engine (optional extra
``fastdllm_rt[serve]``: FastAPI, uvicorn, prometheus_client).

    fastdllm-rt serve MODEL_DIR --port 8000
    curl localhost:8000/v1/chat/completions -d '{"model": "...", "messages": [...]}'
"""
from .app import create_app

__all__ = ["create_app"]
