"""OpenAI request bodies -> engine calls, checked field by field; errors in
OpenAI's JSON shape with the status the API uses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union


class APIError(Exception):
    """An error response: status, OpenAI error type, message, the field at fault."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, type: str = "invalid_request_error",
                 code: Optional[str] = None, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param: str, message: str) -> APIError:
    return APIError(400, f"'{param}': {message}", param=param)


# The runtime's decoding parameters, accepted as extra body fields.
EXTRA_FIELDS = ("block_size", "sub_block_size", "threshold", "use_block_cache", "top_k", "length_rule",
                "entropy_threshold", "margin_threshold", "factor", "steps", "cache", "delimiter_ids",
                "delimiter_threshold")
@dataclass
class Parsed:
    """One request, ready for the engine."""

    chat: bool
    prompt: Union[str, List[dict], List[int]]
    gen: Dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False


def _number(body: dict, key: str, lo: float, hi: float) -> Optional[float]:
    if key not in body or body[key] is None:
        return None
    v = body[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise bad(key, f"must be a number in [{lo:g}, {hi:g}], got {v!r}")
    return float(v)


def _int(body: dict, key: str, lo: int, hi: int) -> Optional[int]:
    if key not in body or body[key] is None:
        return None
    v = body[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise bad(key, f"must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def parse(body: Any, chat: bool, served_model: str, max_tokens_cap: int) -> Parsed:
    """Checks a /v1/chat/completions (chat) or /v1/completions body."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise bad("model", "is required")
    if model != served_model:
        raise APIError(404, f"The model '{model}' does not exist; this server serves '{served_model}'",
                       param="model", code="model_not_found")
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise bad("messages", "must be a non-empty list of {role, content} objects")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
                raise bad(f"messages[{i}].role", "must be 'system', 'developer', 'user' or 'assistant'")
            content = m.get("content")
            if isinstance(content, list):  # content parts: text only
                if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                           for p in content):
                    raise bad(f"messages[{i}].content", "only text content parts are supported")
                content = "".join(p["text"] for p in content)
            if not isinstance(content, str):
                raise bad(f"messages[{i}].content", "must be a string or a list of text parts")
            out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
        prompt: Union[str, List[dict], List[int]] = out
    else:
        p = body.get("prompt")
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
            p = p[0]  # a batch of one
        if isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            prompt = p
        elif isinstance(p, str) and p:
            prompt = p
        else:
            raise bad("prompt", "must be a non-empty string or a list of token ids (one prompt per request)")
    n = _int(body, "n", 1, 128)
    if n not in (None, 1):
        raise bad("n", f"only n = 1 is supported, got {n}")
    if body.get("best_of") not in (None, 1):
        raise bad("best_of", "only 1 is supported")
    if body.get("echo"):
        raise bad("echo", "is not supported")
    if body.get("logprobs") not in (None, False, 0):
        raise bad("logprobs", "is not supported")
    if body.get("suffix") is not None:
        raise bad("suffix", "is not supported")
    gen: Dict[str, Any] = {}
    mt = _int(body, "max_completion_tokens", 1, max_tokens_cap)
    if mt is None:
        mt = _int(body, "max_tokens", 1, max_tokens_cap)
    if mt is not None:
        gen["max_new_tokens"] = mt
    t = _number(body, "temperature", 0.0, 2.0)
    if t is not None:
        gen["temperature"] = t
    tp = _number(body, "top_p", 0.0, 1.0)
    if tp is not None:
        if tp <= 0:
            raise bad("top_p", "must be > 0")
        gen["top_p"] = tp
    seed = _int(body, "seed", -(1 << 63), (1 << 64) - 1)
    if seed is not None:
        gen["seed"] = seed % (1 << 63)
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 16:
            raise bad("stop", "must be a non-empty string or a list of up to 16 of them")
        gen["stop"] = stop
    sampler = body.get("sampler")
    if sampler is not None:
        if not isinstance(sampler, str):
            raise bad("sampler", "must be a string")
        gen["sampler"] = sampler  # checked against the model's family by the engine (a 400 naming it)
    for key in EXTRA_FIELDS:
        if key in body and body[key] is not None:
            gen[key] = body[key]
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise bad("stream_options", "must be an object")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("stream", "must be true or false")
    return Parsed(chat=chat, prompt=prompt, gen=gen, stream=stream,
                  include_usage=bool(so and so.get("include_usage")))


# engine parameter -> the request field it came from
BODY_NAME = {"max_new_tokens": "max_tokens"}


def param_of(message: str, p: Optional["Parsed"] = None) -> Optional[str]:
    """The request field an engine ValueError is about: a field this request
    set that the message names (block_size in "sub_block_size (8) must divide
    block_size (12)"), else the message's first word when it is a name."""
    import re

    if p is not None:
        named = [k for k in p.gen if re.search(rf"(?<![\w]){k}(?![\w])", message)]
        if named:
            return BODY_NAME.get(named[-1], named[-1])
    head = message.split(" ", 1)[0].strip("'\":")
    return BODY_NAME.get(head, head) if head.replace("_", "").isalnum() else None
