"""Text in and out: the tokenizer (HF `tokenizers` on tokenizer.json), the chat
template (jinja2, from tokenizer_config.json or chat_template.jinja) and
UTF-8-safe incremental detokenization for streaming."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Union

from .json_file import read_json_object

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
        self.template_source = None  # where the template came from, for error messages
        self.special = {}
        cfg_path = os.path.join(model_dir, "tokenizer_config.json")
        if os.path.exists(cfg_path):
            cfg = read_json_object(cfg_path)
            self.chat_template = self._pick_template(cfg.get("chat_template"), cfg_path)
            if self.chat_template is not None:
                self.template_source = f"{cfg_path} 'chat_template'"
            for k in ("bos_token", "eos_token", "pad_token"):
                v = cfg.get(k)
                v = v.get("content") if isinstance(v, dict) else v
                if v is not None and not isinstance(v, str):
                    raise ValueError(f"{cfg_path}: '{k}' must be a string or an object with 'content', got {v!r}")
                self.special[k] = v
        jinja_path = os.path.join(model_dir, "chat_template.jinja")
        if self.chat_template is None and os.path.exists(jinja_path):
            try:
                with open(jinja_path, encoding="utf-8") as f:
                    self.chat_template = f.read()
            except UnicodeDecodeError as e:
                raise ValueError(f"{jinja_path}: not UTF-8 text ({e})") from None
            self.template_source = jinja_path
        self._compiled = None

    @staticmethod
    def _pick_template(value, cfg_path: str) -> Optional[str]:
        """tokenizer_config.json 'chat_template': a string, or Hugging Face's list
        of {"name", "template"} (the one named "default" is the chat template)."""
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                           and isinstance(t.get("template"), str) for t in value):
            by_name = {t["name"]: t["template"] for t in value}
            if "default" not in by_name:
                raise ValueError(f"{cfg_path}: 'chat_template' lists templates {sorted(by_name)} but none is "
                                 "named 'default'")
            return by_name["default"]
        raise ValueError(f"{cfg_path}: 'chat_template' must be a string or a list of {{name, template}} objects, "
                         f"got {type(value).__name__}")

    def encode(self, text: str) -> List[int]:
        # No BOS is added: the official entry points tokenize the templated text as is.
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError(f"{os.path.dirname(self.path)}: no chat template (tokenizer_config.json 'chat_template' "
                             "or chat_template.jinja); pass chat=False for a raw prompt")
        from jinja2.exceptions import TemplateError
        if self._compiled is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(msg):
                raise TemplateError(msg)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = raise_exception
            env.filters["tojson"] = lambda v, indent=None: json.dumps(v, indent=indent, ensure_ascii=False)
            try:
                self._compiled = env.from_string(self.chat_template)
            except TemplateError as e:
                line = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
                raise ValueError(f"chat template in {self.template_source}: {e}{line}") from None
        if isinstance(messages, dict):
            raise TypeError("chat messages must be a list of {'role', 'content'} dicts, got a single dict")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"chat message {i} must be a dict with 'role' and 'content', got {m!r}")
            if not isinstance(m["content"], str) or not isinstance(m["role"], str):
                raise ValueError(f"chat message {i}: 'role' and 'content' must be strings, got {m!r}")
        try:
            return self._compiled.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         tools=None, **self.special)
        except TemplateError as e:
            raise ValueError(f"chat template in {self.template_source}: {e}") from None
        except Exception as e:  # a template bug (TypeError, KeyError, ...) in someone else's template
            raise ValueError(f"chat template in {self.template_source} failed: {type(e).__name__}: {e}") from None


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
