"""Text in and out: the tokenizer (HF `tokenizers` on tokenizer.json), the chat
template (jinja2, from tokenizer_config.json or chat_template.jinja) and
UTF-8-safe incremental detokenization for streaming."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Union

Messages = Sequence[Dict[str, str]]
Prompt = Union[str, Messages]


class TextTokenizer:
    def __init__(self, model_dir: str):
        from tokenizers import Tokenizer

        self.path = os.path.join(model_dir, "tokenizer.json")
        try:
            self._tok = Tokenizer.from_file(self.path)
        except Exception as e:  # tokenizers raises its own Exception type
            raise ValueError(f"{self.path}: cannot load tokenizer ({e})") from None
        self.chat_template = None
        self.special = {}
        cfg_path = os.path.join(model_dir, "tokenizer_config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
            self.chat_template = cfg.get("chat_template")
            for k in ("bos_token", "eos_token", "pad_token"):
                v = cfg.get(k)
                self.special[k] = v.get("content") if isinstance(v, dict) else v
        jinja_path = os.path.join(model_dir, "chat_template.jinja")
        if self.chat_template is None and os.path.exists(jinja_path):
            with open(jinja_path, encoding="utf-8") as f:
                self.chat_template = f.read()
        self._compiled = None

    def encode(self, text: str) -> List[int]:
        # No BOS is added: the official entry points tokenize the templated text as is.
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError(f"{os.path.dirname(self.path)}: no chat template (tokenizer_config.json 'chat_template' "
                             "or chat_template.jinja); pass chat=False for a raw prompt")
        if self._compiled is None:
            from jinja2.exceptions import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(msg):
                raise TemplateError(msg)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
            self._compiled = env.from_string(self.chat_template)
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"chat message {i} must be a dict with 'role' and 'content', got {m!r}")
        return self._compiled.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                     tools=None, **self.special)


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas.

    Each update decodes the ids seen so far and emits the new suffix, holding
    back one trailing U+FFFD: lossy UTF-8 decoding turns an incomplete sequence
    at the end (which later bytes may complete) into exactly one U+FFFD, and is
    prefix-stable before it, so the concatenated deltas equal the decode of all
    ids once finish() has run. Invalid bytes further back are emitted as U+FFFD."""

    def __init__(self, tokenizer: TextTokenizer):
        self.tok = tokenizer
        self.emitted = ""

    def update(self, ids: Sequence[int]) -> str:
        text = self.tok.decode(ids)
        stable = text[:-1] if text.endswith("\ufffd") else text
        if not stable.startswith(self.emitted) or len(stable) <= len(self.emitted):
            return ""
        delta = stable[len(self.emitted):]
        self.emitted = stable
        return delta

    def finish(self, ids: Sequence[int]) -> str:
        text = self.tok.decode(ids)
        delta = text[len(self.emitted):] if text.startswith(self.emitted) else ""
        self.emitted = text
        return delta
