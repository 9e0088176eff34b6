"""Engine: a model folder loaded for generation.

    engine = fastdllm_rt.Engine("path/to/Fast_dLLM_v2_1.5B")
    for delta in engine.stream("Why is the sky blue?"):
        print(delta, end="", flush=True)

Python does the text (tokenizer, chat template, detokenization); every forward,
the KV cache and the block / sub-block / threshold loop run in C++ (_C), one
call per forward with the GIL released.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Union

from . import _C
from .generation_config import GenerationConfig
from .loader import load_model, read_config
from .text import IncrementalDetokenizer, Messages, Prompt, TextTokenizer

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class GenerationResult:
    text: Optional[str]              # None when generated from ids on a model folder without a tokenizer
    token_ids: List[int]             # generated ids (prompt excluded), truncated after the first stop token
    finish_reason: str               # "stop" (stop token produced) or "length" (block budget used up)
    num_forwards: int                # model forwards, counted as the spec counts them
    prompt_tokens: int
    timings: Dict[str, float] = field(default_factory=dict)  # seconds: prefill, decode, total

    @property
    def tokens_per_forward(self) -> float:
        return len(self.token_ids) / self.num_forwards if self.num_forwards else 0.0


def parse_bytes(value: Union[int, str, None], name: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
        return value
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]i?B?|B)?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ValueError(f"{name} must be a number of bytes or a size like '4GB', got {value!r}")
    unit = (m.group(2) or "B").upper().rstrip("B").rstrip("I")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[unit]
    n = int(float(m.group(1)) * mult)
    if n <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return n


class Engine:
    """A Fast-dLLM v2 (Qwen2) model folder, ready to generate.

    Args:
        path: Hugging Face model folder (config.json, safetensors, tokenizer files).
        device: "auto" | "cpu" | "cuda". "auto" is the CPU: the CUDA path is
            built and compiles, but has not yet been run on a GPU, so it is
            opt-in ("cuda", which raises a clear error without a device).
        dtype: weight storage dtype: "auto" (the checkpoint's), "bfloat16",
            "float16" or "float32". Compute is fp32.
        max_seq_len: longest prompt + generation (default: the config's
            max_position_embeddings, at most 32768).
        max_memory: KV-cache budget in bytes or as "2GB" (default: enough for
            max_seq_len). Exceeding it raises MemoryBudgetError.
        page_size: tokens per KV page; block sizes must be multiples of it.
        threads: CPU threads (default: all cores).
    """

    def __init__(self, path: str, device: str = "auto", dtype: str = "auto", max_seq_len: Optional[int] = None,
                 max_memory: Union[int, str, None] = None, page_size: int = 16, threads: Optional[int] = None):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if device == "cuda" and not _C.cuda_status()["available"]:
            raise ValueError(f"device='cuda' is not available: {_C.cuda_status()['message']}. Use device='cpu'.")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size <= 0:
            raise ValueError(f"page_size must be a positive integer, got {page_size!r}")
        if threads is not None:
            _C.set_num_threads(threads)
        self.path = path
        self.device = "cuda" if device == "cuda" else "cpu"
        self.config = read_config(path)
        if max_seq_len is None:
            max_seq_len = min(self.config.max_position_embeddings, 32768)
        if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len <= 0:
            raise ValueError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")
        self.max_seq_len = max_seq_len
        self.model = load_model(path, dtype=dtype, config=self.config, device=self.device)
        self.page_size = page_size
        page_bytes = (self.config.num_hidden_layers * 2 * self.config.num_key_value_heads * page_size
                      * self.config.head_dim * 4)
        budget = parse_bytes(max_memory, "max_memory")
        if budget is None:
            # The whole context plus the active block (at most 128 tokens) in level 2.
            max_pages = -(-max_seq_len // page_size) + -(-128 // page_size)
        else:
            max_pages = budget // page_bytes
            if max_pages < 1:
                raise ValueError(f"max_memory={max_memory!r} is smaller than one KV page ({page_bytes} bytes)")
        self.pool = self.model.make_pool(page_size, max_pages)
        self.generation_config = GenerationConfig.from_model_dir(path)
        self.tokenizer = TextTokenizer(path) if os.path.exists(os.path.join(path, "tokenizer.json")) else None
        self._lock = threading.Lock()  # one generation at a time: the model's activation arena is shared
        self.last_result: Optional[GenerationResult] = None  # of the last finished stream()

    # ---- prompts -------------------------------------------------------------
    def _need_tokenizer(self) -> TextTokenizer:
        if self.tokenizer is None:
            raise ValueError(f"{self.path}: no tokenizer.json, so text prompts cannot be used; "
                             "call generate_ids() with token ids instead")
        return self.tokenizer

    def encode_prompt(self, prompt: Prompt, chat: Optional[bool] = None) -> List[int]:
        """Token ids of a prompt: a string (chat-templated unless chat=False) or a
        list of chat messages ({"role", "content"} dicts)."""
        tok = self._need_tokenizer()
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("the prompt is empty")
            use_chat = (tok.chat_template is not None) if chat is None else chat
            text = tok.apply_chat_template([{"role": "user", "content": prompt}]) if use_chat else prompt
        elif isinstance(prompt, (list, tuple)):
            if chat is False:
                raise ValueError("a list of chat messages needs chat=True (or None)")
            if not prompt:
                raise ValueError("the list of chat messages is empty")
            text = tok.apply_chat_template(prompt)
        else:
            raise TypeError(f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}")
        ids = tok.encode(text)
        if not ids:
            raise ValueError("the prompt encodes to no tokens")
        return ids

    # ---- generation ------------------------------------------------------------
    def _start(self, ids: Sequence[int], gen: GenerationConfig) -> "_C.Generation":
        params = gen.native(block_size=self.config.bd_size, mask_id=self.config.mask_token_id,
                            stop_id=self.config.stop_token_id, max_seq_len=self.max_seq_len)
        try:
            ids = [int(t) for t in ids]
        except (TypeError, ValueError):
            raise TypeError("prompt ids must be a sequence of integers") from None
        return _C.Generation(self.model, self.pool, ids, params)

    def _config(self, overrides) -> GenerationConfig:
        return self.generation_config.updated(**overrides)

    def _result(self, g: "_C.Generation", t0: float, t_prefill: Optional[float], with_text: bool) -> GenerationResult:
        out = list(g.output)
        total = time.perf_counter() - t0
        timings = {"total_s": total}
        if t_prefill is not None:
            timings["prefill_s"] = t_prefill
            timings["decode_s"] = total - t_prefill
        text = self.tokenizer.decode(out) if (with_text and self.tokenizer is not None) else None
        return GenerationResult(text=text, token_ids=out, finish_reason=g.finish_reason, num_forwards=g.num_forwards,
                                prompt_tokens=g.prompt_len, timings=timings)

    def _run(self, ids: Sequence[int], gen: GenerationConfig, with_text: bool) -> GenerationResult:
        with self._lock:
            g = self._start(ids, gen)
            t0 = time.perf_counter()
            t_prefill = None
            if g.step() and g.last_step == "prefill":
                t_prefill = time.perf_counter() - t0
            g.run()
            return self._result(g, t0, t_prefill, with_text)

    def generate_ids(self, prompt_ids, **gen) -> Union[GenerationResult, List[GenerationResult]]:
        """Generates from token ids; works without tokenizer files.

        prompt_ids: a list of ints, or a list of such lists (one result each).
        gen: GenerationConfig fields (max_new_tokens, block_size, sub_block_size,
        threshold, use_block_cache, temperature, top_p, top_k, seed, stop_token_id)."""
        cfg = self._config(gen)
        if len(prompt_ids) and isinstance(prompt_ids[0], (list, tuple)):
            return [self._run(p, cfg, with_text=False) for p in prompt_ids]
        return self._run(prompt_ids, cfg, with_text=False)

    def generate(self, prompts: Union[Prompt, List[Prompt]], chat: Optional[bool] = None, **gen) -> List[GenerationResult]:
        """One result per prompt (text, ids, finish reason, forwards, timings)."""
        cfg = self._config(gen)
        if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts and isinstance(prompts[0], dict)):
            prompts = [prompts]
        encoded = [self.encode_prompt(p, chat) for p in prompts]
        return [self._run(ids, cfg, with_text=True) for ids in encoded]

    def stream(self, prompt: Prompt, chat: Optional[bool] = None, **gen) -> Iterator[str]:
        """Yields text as tokens are decoded: after every forward, the new text of
        the contiguous decoded prefix (never revised later), UTF-8 safe."""
        cfg = self._config(gen)
        ids = self.encode_prompt(prompt, chat)
        with self._lock:
            g = self._start(ids, cfg)
            detok = IncrementalDetokenizer(self.tokenizer)
            t0 = time.perf_counter()
            while g.step():
                visible = list(g.decoded_prefix)
                delta = detok.update(visible)
                if delta:
                    yield delta
            self.last_result = self._result(g, t0, None, with_text=True)
            tail = detok.finish(self.last_result.token_ids)
            if tail:
                yield tail
