"""Engine: a model folder loaded for generation, for one user or many.

    engine = fastdllm_rt.Engine("path/to/Fast_dLLM_v2_1.5B")
    for delta in engine.stream("Why is the sky blue?"):
        print(delta, end="", flush=True)

Python does the text (tokenizer, chat template, detokenization). A background
thread in C++ (_C.EngineLoop, runtime/engine_loop.h) owns the model, the KV
cache and every running sequence, and runs one batched forward per step over
all of them (continuous batching). Every method here may be called from any
thread at once: requests are validated on the caller's thread, then share
forwards with everyone else's. The GIL is released while C++ runs or waits.
"""
from __future__ import annotations

import asyncio
import os
import re
import threading
import weakref
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

from . import _C
from .families import FAST_DLLM_V2
from .generation_config import GenerationConfig
from .loader import load_model, read_config
from .text import IncrementalDetokenizer, Prompt, TextTokenizer

DEVICES = ("auto", "cpu", "cuda")
KV_DTYPES = ("auto", "float32", "bfloat16")
_POLL_S = 0.2  # a blocked wait wakes this often, so Ctrl-C reaches a waiting thread


@dataclass
class GenerationResult:
    text: Optional[str]              # None when generated from ids (generate_ids) or without a tokenizer
    # generated ids (prompt excluded): Fast-dLLM v2 truncates after the first stop token; LLaDA / Dream
    # return all max_new_tokens ids as the official loop leaves them (the text ends at the first stop token)
    token_ids: List[int]
    finish_reason: str               # "stop" (a stop token was produced) or "length"
    num_forwards: int                # model forwards this sequence took, counted as the spec counts them
    prompt_tokens: int
    cached_prompt_tokens: int = 0    # prompt tokens whose KV came from the prefix cache
    timings: Dict[str, float] = field(default_factory=dict)  # seconds: total_s, first_forward_s
    # per token id: the forward (1-based, as num_forwards counts) that committed it: the decode order
    commit_steps: List[int] = field(default_factory=list)
    # LLaDA / Dream samplers with blocks: each block's length (AdaBlock's block history)
    block_lengths: List[int] = field(default_factory=list)

    @property
    def tokens_per_forward(self) -> float:
        return len(self.token_ids) / self.num_forwards if self.num_forwards else 0.0


class GenerationError(RuntimeError):
    """A request failed while it ran (the engine and the other requests carry on)."""


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


def _positive_int(value, name: str, upper: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be at most {upper}, got {value}")
    return value


def physical_cores() -> int:
    """Physical CPU cores (hyper-threads share a core's FMA units, so the
    forwards gain nothing from them): distinct (package, core) pairs in
    /proc/cpuinfo, else os.cpu_count()."""
    try:
        pairs, phys = set(), None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    pairs.add((phys, line.split(":", 1)[1].strip()))
        if pairs:
            return max(1, min(len(pairs), os.cpu_count() or len(pairs)))
    except OSError:
        pass
    return os.cpu_count() or 1


def default_threads() -> int:
    """The forwards' threads when none are asked for: OMP_NUM_THREADS if set,
    else the physical cores."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), max_threads())
    return physical_cores()


def max_threads() -> int:
    """The most forward threads an engine takes (each costs a thread and its stacks)."""
    return max(64, 4 * (os.cpu_count() or 1))


def _available_host_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _result(state: dict, text: Optional[str]) -> GenerationResult:
    timings = {"total_s": state["finished_s"] - state["submitted_s"]}
    if state["first_forward_s"]:
        timings["first_forward_s"] = state["first_forward_s"] - state["submitted_s"]
    ids = list(state["output"])
    return GenerationResult(text=text, token_ids=ids, finish_reason=state["finish_reason"],
                            num_forwards=state["num_forwards"], prompt_tokens=state["prompt_len"],
                            cached_prompt_tokens=state["prefix_hit_tokens"], timings=timings,
                            commit_steps=list(state["commit_steps"])[:len(ids)],
                            block_lengths=list(state.get("block_lengths", [])))


class _Tracked:
    """A caller's view of one running request: its text so far (UTF-8 safe,
    never revised), text stop strings, and its result once it ends.

    poll() reads the request's latest state and returns the new text; when a
    stop string appears, the text ends before it and the request is cancelled
    at once (its pages freed), with finish reason "stop"."""

    def __init__(self, engine: "Engine", request, tokenizer: Optional[TextTokenizer], stop: Optional[List[str]],
                 with_text: bool, deltas: bool = True):
        self.engine = engine
        self.request = request
        self.tokenizer = tokenizer
        # Text is decoded as it arrives only where someone reads it: the deltas,
        # the result's text, or the stop strings.
        decode = tokenizer is not None and (deltas or with_text or bool(stop))
        self.detok = IncrementalDetokenizer(tokenizer) if decode else None
        self.stop = stop or []
        self.with_text = with_text
        self.version = 0
        self.text = ""          # the text emitted so far
        self.finished = False
        self.result: Optional[GenerationResult] = None
        self.error: Optional[str] = None  # why it failed, raised by take()

    def _stop_at(self, text: str, searched: int):
        """(where the first stop string begins in text, its length), or (-1, 0);
        the search starts where an occurrence could first overlap the new part."""
        best = (-1, 0)
        for s in self.stop:
            i = text.find(s, max(0, searched - len(s) + 1))
            if i >= 0 and (best[0] < 0 or i < best[0]):
                best = (i, len(s))
        return best

    def _cut_ids(self, ids: List[int], limit: int) -> List[int]:
        """The shortest prefix of ids whose text reaches `limit` characters (the
        token that completes a stop string ends the ids)."""
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self.tokenizer.decode(ids[:mid])) >= limit:
                hi = mid
            else:
                lo = mid + 1
        return ids[:lo]

    def poll(self) -> str:
        if self.finished:
            return ""
        state = self.request.snapshot()
        self.version = state["version"]
        if state["done"]:
            self.finished = True
            if state["finish_reason"] in ("error", "cancelled"):
                self.error = state["error"] or "the request was cancelled"
                return ""
            out = list(state["output"])
            # LLaDA / Dream generate a fixed length with EOS padding: the text
            # ends at the first stop token, as the official evaluations cut it.
            text_ids = out if self.engine.config.family == FAST_DLLM_V2 else list(state["decoded"])
            delta = self.detok.finish(text_ids) if self.detok else ""
        else:
            delta = self.detok.update(list(state["decoded"])) if self.detok else ""
            out = None
        if self.stop and delta:
            whole = self.text + delta
            at, length = self._stop_at(whole, len(self.text))
            if at >= 0:
                ids = list(state["output"] if out is not None else state["decoded"])
                if not self.finished:
                    self.finished = True
                    self.request.cancel()  # frees the pages at once
                # finished_s on the loop's clock (steady_clock: CLOCK_MONOTONIC, as time.monotonic)
                state = dict(state, output=self._cut_ids(ids, at + length), finish_reason="stop", done=True,
                             finished_s=state["finished_s"] or time.monotonic())
                delta = whole[len(self.text):at]
                self.text = whole[:at]
                self._finish(state, self.text)
                return delta
        self.text += delta
        if out is not None:  # finish() has decoded the whole output
            self._finish(state, self.detok.emitted if self.detok else None)
        return delta

    def _finish(self, state: dict, text: Optional[str]) -> None:
        """text: as cut at a stop string, or the decode of the whole output."""
        self.result = _result(state, text if self.with_text else None)
        self.engine.last_result = self.result

    def take(self) -> GenerationResult:
        if self.error is not None:
            raise GenerationError(f"generation failed: {self.error}")
        return self.result

    def cancel(self) -> None:
        if not self.finished:
            self.finished = True
            self.request.cancel()


def _cancel_quietly(tracked: "_Tracked") -> None:
    try:
        tracked.cancel()
    except Exception:  # interpreter shutdown: the engine may be gone already
        pass


class _Stream:
    """What the sync and async streams share: one tracked request, its result
    at the end, and cancellation when closed or collected."""

    def __init__(self, tracked: _Tracked):
        self._t = tracked
        self.result: Optional[GenerationResult] = None
        # Cancels when the stream is collected, also from a reference cycle
        # (a weakref callback: the cycle collector always runs it).
        weakref.finalize(self, _cancel_quietly, tracked)

    @property
    def text(self) -> str:
        """The text streamed so far."""
        return self._t.text

    def _ready(self) -> Optional[str]:
        """The next delta; "" when the caller must wait for the engine; None at
        the end (result set, or GenerationError raised)."""
        delta = self._t.poll()
        if delta:
            return delta
        if self._t.finished:
            self.result = self._t.take()
            return None
        return ""

    def close(self) -> None:
        self._t.cancel()


class TextStream(_Stream):
    """Iterator over the text of one request as it is decoded: after every
    forward, the new text of the contiguous decoded prefix (never revised
    later), UTF-8 safe, cut before a stop string. ``close()`` (or dropping the
    stream, or leaving a ``for`` loop over it early and letting it go) cancels
    the request and frees its KV pages at once. ``result`` holds the
    GenerationResult once the stream is exhausted."""

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        t = self._t
        try:
            while True:
                delta = self._ready()
                if delta is None:
                    raise StopIteration
                if delta:
                    return delta
                t.request.wait(t.version, _POLL_S)  # wakes often enough for Ctrl-C to land
        except (StopIteration, GenerationError):
            raise
        except BaseException:
            # Ctrl-C (or any error) while waiting: the request's pages go back
            # now, not when a traceback that holds this stream is dropped.
            t.cancel()
            raise

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncTextStream(_Stream):
    """TextStream for asyncio: ``async for delta in stream``; ``result`` once it
    is exhausted; ``aclose()`` / ``close()`` (or dropping it) cancels the
    request and frees its KV pages at once. Waiting costs no thread per stream
    (the engine's notifier wakes it)."""

    def __init__(self, engine: "Engine", tracked: _Tracked):
        super().__init__(tracked)
        self._engine = engine

    def __aiter__(self) -> "AsyncTextStream":
        return self

    async def __anext__(self) -> str:
        t = self._t
        try:
            while True:
                delta = self._ready()
                if delta is None:
                    raise StopAsyncIteration
                if delta:
                    return delta
                await self._engine._notifier.wait(t.request, t.version)
        except (StopAsyncIteration, GenerationError):
            raise
        except BaseException:  # cancelled (client gone, task cancelled): free the pages now
            t.cancel()
            raise

    async def aclose(self) -> None:
        self.close()


class _Notifier:
    """Wakes asyncio waiters: one thread waits for the engine loop's steps (GIL
    released) and resolves the futures of the requests that changed, so any
    number of async streams cost one thread."""

    def __init__(self, loop_c):
        self._c = loop_c
        self._lock = threading.Lock()
        self._waiters: List[tuple] = []  # (request, seen version, asyncio loop, future)
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def wait(self, request, seen: int) -> "asyncio.Future":
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if request.wait(seen, 0.0) > seen:
            fut.set_result(None)
            return fut
        with self._lock:
            if self._closed:
                fut.set_result(None)
                return fut
            self._waiters.append((request, seen, loop, fut))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fastdllm-notifier", daemon=True)
                self._thread.start()
        return fut

    @staticmethod
    def _resolve(fut) -> None:
        if not fut.done():
            fut.set_result(None)

    def _run(self) -> None:
        step = 0
        while True:
            step = self._c.wait_progress(step, _POLL_S)
            with self._lock:
                waiters, keep = self._waiters, []
                closed = self._closed
            for w in waiters:
                request, seen, loop, fut = w
                if closed or fut.done() or request.wait(seen, 0.0) > seen:
                    try:
                        loop.call_soon_threadsafe(self._resolve, fut)
                    except RuntimeError:  # the event loop is closed
                        pass
                else:
                    keep.append(w)
            with self._lock:
                self._waiters = keep + self._waiters[len(waiters):]
                if closed and not self._waiters:
                    return

    def close(self) -> None:
        with self._lock:
            self._closed = True


class Engine:
    """A Fast-dLLM v2 (Qwen2) model folder, ready to generate for many callers.

    Args:
        path: Hugging Face model folder (config.json, safetensors, tokenizer files).
        device: "auto" | "cpu" | "cuda". "auto" is the CPU: the CUDA path is
            built and compiles, but has not yet been run on a GPU, so it is
            opt-in ("cuda", which raises a clear error without a device).
        dtype: weight storage dtype: "auto" (the checkpoint's), "bfloat16",
            "float16" or "float32". Compute is fp32.
        max_seq_len: longest prompt + generation of one request (default: the
            config's max_position_embeddings, at most 32768).
        max_memory: KV-cache budget in bytes or as "2GB" (default: room for
            max_batch_size requests of max_seq_len tokens, at most half the
            free memory). A request that can never fit raises MemoryBudgetError;
            one that cannot fit now waits for pages.
        page_size: tokens per KV page; block sizes must be multiples of it.
        threads: CPU threads of the forwards (default: OMP_NUM_THREADS, else the
            physical cores; at most 4x the logical CPUs, min 64).
        max_batch_size: requests decoded together; more wait in a queue.
        max_batch_tokens: tokens per forward (default 1024 on the CPU, 8192 on
            a GPU); longer prompts are prefilled in chunks of whole blocks.
            LLaDA / Dream run the whole row (prompt + max_new_tokens) in one
            forward: their CPU default is 4096.
        kv_dtype: "auto" (bfloat16 for bf16 / fp16 models, float32 for fp32
            ones, which stay token-exact), "bfloat16" or "float32".
        prefix_cache: share the KV pages of identical prompt prefixes between
            requests, and keep them after a request ends (evicted least recently
            used when pages are needed). Outputs are the same with it on or off.
        quantize: None, "int8" or "int4": quantize a float checkpoint's layer
            matrices at load with round-to-nearest (int8: per-output-channel
            symmetric, W8A16; int4: groups of ``group_size`` inputs with a scale
            and zero point each, W4A16), or "fp8" (CUDA only: E4M3 with a scale
            per output row and activations quantized per token, W8A8). GPTQ /
            AWQ / fp8 checkpoints (and folders written by ``fastdllm-rt
            quantize``) load quantized without it (fp8: as fp8 on CUDA,
            dequantized on the CPU).
        group_size: inputs per scale group with ``quantize`` (default: 128 for
            int4, 0 = one group per output channel for int8).
        lm_head: None (the model dtype) or "int8": the output head as int8
            codes with one scale per row (rounded to nearest at load; a tied
            embedding keeps its float copy for the lookup). Every forward
            reads the whole head, so on a memory-bound CPU this is the next
            lever after quantized layers; it changes the logits slightly.
    """

    def __init__(self, path: str, device: str = "auto", dtype: str = "auto", max_seq_len: Optional[int] = None,
                 max_memory: Union[int, str, None] = None, page_size: int = 16, threads: Optional[int] = None,
                 max_batch_size: int = 16, max_batch_tokens: Optional[int] = None, kv_dtype: str = "auto",
                 prefix_cache: bool = True, quantize: Optional[str] = None, group_size: Optional[int] = None,
                 lm_head: Optional[str] = None):
        self._loop_c = None
        self._notifier = None
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if device == "cuda" and not _C.cuda_status()["available"]:
            raise ValueError(f"device='cuda' is not available: {_C.cuda_status()['message']}. Use device='cpu'.")
        if kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype must be one of {KV_DTYPES}, got {kv_dtype!r}")
        if not isinstance(prefix_cache, bool):
            raise ValueError(f"prefix_cache must be True or False, got {prefix_cache!r}")
        _positive_int(page_size, "page_size", 4096)
        if threads is not None:
            # OpenMP makes a thread (and its stacks) per requested thread: a
            # typo like threads=100000 must not reach it.
            _positive_int(threads, "threads", max_threads())
        else:
            threads = default_threads()
        self.threads = threads
        _positive_int(max_batch_size, "max_batch_size", 4096)
        self.path = path
        self.device = "cuda" if device == "cuda" else "cpu"
        self.config = read_config(path)
        if max_batch_tokens is None:
            # LLaDA / Dream forwards run over the whole row (prompt + max_new_tokens) at once.
            full_row = self.config.family != FAST_DLLM_V2
            max_batch_tokens = 8192 if self.device == "cuda" else (4096 if full_row else 1024)
        _positive_int(max_batch_tokens, "max_batch_tokens", 1 << 20)
        if max_seq_len is None:
            max_seq_len = min(self.config.max_position_embeddings, 32768)
        _positive_int(max_seq_len, "max_seq_len", 1 << 24)
        self.max_seq_len = max_seq_len
        self.model = load_model(path, dtype=dtype, config=self.config, device=self.device, quantize=quantize,
                                group_size=group_size, lm_head=lm_head)
        self.kv_dtype = kv_dtype if kv_dtype != "auto" else ("float32" if self.model.dtype == "float32" else "bfloat16")
        self.page_size = page_size
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        page_bytes = (self.config.num_hidden_layers * 2 * self.config.num_key_value_heads * page_size
                      * self.config.head_dim * (4 if self.kv_dtype == "float32" else 2))
        budget = parse_bytes(max_memory, "max_memory")
        if budget is None:
            # Every batch slot can hold a whole context (plus an active block of
            # up to 128 tokens), within half the memory that is free now.
            per_seq = -(-max_seq_len // page_size) + -(-128 // page_size)
            want = max_batch_size * per_seq
            free = _available_host_memory() if self.device == "cpu" else None
            max_pages = max(min(want, free // 2 // page_bytes) if free else want, per_seq)
        else:
            max_pages = budget // page_bytes
            if max_pages < 1:
                raise ValueError(f"max_memory={max_memory!r} is smaller than one KV page ({page_bytes} bytes)")
            if max_pages >= 1 << 31:
                raise ValueError(f"max_memory={max_memory!r} asks for {max_pages} KV pages; at most 2**31 - 1")
        self.generation_config = GenerationConfig.from_model_dir(path, self.config.family)
        self.tokenizer = TextTokenizer(path) if os.path.exists(os.path.join(path, "tokenizer.json")) else None
        self._loop_c = _C.EngineLoop(self.model, page_size, int(max_pages), self.kv_dtype, prefix_cache,
                                     max_batch_size, max_batch_tokens, threads)
        self._notifier = _Notifier(self._loop_c)
        self.last_result: Optional[GenerationResult] = None  # of the last stream that ran to its end

    # ---- lifetime ----------------------------------------------------------------
    def close(self) -> None:
        """Stops the engine's thread; requests still running end with an error."""
        if self._notifier is not None:
            self._notifier.close()
        if self._loop_c is not None:
            self._loop_c.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def logits(self, token_ids, block_size: Optional[int] = None):
        """float32 numpy [len(token_ids), vocab]: the logits of the model's own
        prefill forward over these ids (positions from 0; Fast-dLLM v2:
        block-causal attention with blocks of ``block_size``, default the
        config's bd_size; LLaDA and Dream: bidirectional attention over all the
        ids, the model's outputs as they are, so Dream's row p predicts token
        p + 1), for perplexity and accuracy checks. Runs between two decode
        steps of the engine, on KV pages from its budget (MemoryBudgetError when
        too few are free now)."""
        try:
            ids = [int(t) for t in token_ids]
        except (TypeError, ValueError):
            raise ValueError(f"token_ids must be a sequence of token ids, got {type(token_ids).__name__}") from None
        if not ids:
            raise ValueError("token_ids is empty")
        if self.config.family != FAST_DLLM_V2:
            if block_size is not None:
                raise ValueError(f"block_size applies to Fast-dLLM v2 models; a {self.config.family} model "
                                 "attends over all the ids")
            if len(ids) > self.max_batch_tokens:
                raise ValueError(f"token_ids has {len(ids)} ids; a {self.config.family} forward runs over all of "
                                 f"them at once, at most max_batch_tokens={self.max_batch_tokens}")
            return self._loop_c.logits(ids, len(ids))  # one block spanning the ids: bidirectional
        bs = self.config.bd_size if block_size is None else block_size
        _positive_int(bs, "block_size", 4096)
        return self._loop_c.logits(ids, bs)  # range checked there; MemoryBudgetError when pages are short

    def stats(self) -> dict:
        """Counters of the engine so far: model_forwards (batched forwards),
        sequence_forwards (the sum of sequences over them), batch_size_histogram,
        prefix_cache_hit_tokens, pages_in_use / pages_cached / pages_total, the
        request queue, tokens generated."""
        s = self._loop_c.stats()
        s["kv_dtype"] = self.kv_dtype
        s["page_bytes"] = self._loop_c.page_bytes
        return s

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

    # ---- requests --------------------------------------------------------------
    def _config(self, overrides) -> GenerationConfig:
        cfg = self.generation_config.updated(**overrides)
        if cfg.stop and self.tokenizer is None:
            raise ValueError(f"{self.path}: stop strings need a tokenizer (no tokenizer.json)")
        return cfg

    def _submit(self, ids: Sequence[int], gen: GenerationConfig):
        params = gen.native(block_size=self.config.bd_size, mask_id=self.config.mask_token_id,
                            stop_id=self.config.stop_token_id, max_seq_len=self.max_seq_len,
                            family=self.config.family)
        try:
            ids = [int(t) for t in ids]
        except (TypeError, ValueError):
            raise TypeError("prompt ids must be a sequence of integers") from None
        for i, t in enumerate(ids):
            if not -(1 << 31) <= t < (1 << 31):
                raise ValueError(f"prompt token {t} at index {i} is outside the vocabulary "
                                 f"[0, {self.config.vocab_size})")
        return self._loop_c.submit(ids, params)

    def _submit_all(self, prompts_ids: List[Sequence[int]], gen: GenerationConfig) -> list:
        """Submits every prompt (one continuous batch) or none: a prompt that
        fails validation raises naming its index, and the ones already queued
        are cancelled."""
        reqs = []
        try:
            for i, ids in enumerate(prompts_ids):
                try:
                    reqs.append(self._submit(ids, gen))
                except (ValueError, TypeError, MemoryError) as e:
                    if len(prompts_ids) == 1:
                        raise
                    raise type(e)(f"prompt {i}: {e}") from None
        except BaseException:
            for r in reqs:
                r.cancel()
            raise
        return reqs

    def _track(self, reqs: list, gen: GenerationConfig, with_text: bool, deltas: bool = True) -> List[_Tracked]:
        return [_Tracked(self, r, self.tokenizer, gen.stop, with_text, deltas) for r in reqs]

    def _wait_all(self, tracked: List[_Tracked]) -> List[GenerationResult]:
        """Follows every request until it ends, one wake-up per engine step for
        all of them (stop strings act within a step); Ctrl-C cancels them all
        and frees their pages before it propagates."""
        step = 0
        try:
            while True:
                for t in tracked:
                    t.poll()
                if all(t.finished for t in tracked):
                    break
                step = self._loop_c.wait_progress(step, _POLL_S)
        except BaseException:
            for t in tracked:
                t.cancel()
            raise
        return self._results(tracked)

    @staticmethod
    def _results(tracked: List[_Tracked]) -> List[GenerationResult]:
        """The results; the first request that failed raises, naming its prompt."""
        out = []
        for i, t in enumerate(tracked):
            try:
                out.append(t.take())
            except GenerationError as e:
                raise GenerationError(f"prompt {i}: {e}" if len(tracked) > 1 else str(e)) from None
        return out

    @staticmethod
    def _is_batch_of_ids(prompt_ids) -> bool:
        """A list of prompts (lists, tuples or arrays of ids) rather than one."""
        return len(prompt_ids) > 0 and hasattr(prompt_ids[0], "__len__") and not isinstance(prompt_ids[0], str)

    def generate_ids(self, prompt_ids, **gen) -> Union[GenerationResult, List[GenerationResult]]:
        """Generates from token ids; works without tokenizer files.

        prompt_ids: a list of ints, or a list of such lists (one result each; they
        run as one continuous batch). gen: GenerationConfig fields."""
        cfg = self._config(gen)
        batch = self._is_batch_of_ids(prompt_ids)
        reqs = self._submit_all(list(prompt_ids) if batch else [prompt_ids], cfg)
        results = self._wait_all(self._track(reqs, cfg, with_text=False, deltas=False))
        return results if batch else results[0]

    def _prompt_list(self, prompts) -> list:
        if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts and isinstance(prompts[0], dict)):
            return [prompts]
        if not isinstance(prompts, (list, tuple)):
            raise TypeError(f"prompts must be a prompt or a list of prompts, got {type(prompts).__name__}")
        return list(prompts)

    def _encode_all(self, prompts: list, chat: Optional[bool]) -> List[List[int]]:
        encoded = []
        for i, p in enumerate(prompts):
            try:
                encoded.append(self.encode_prompt(p, chat))
            except (ValueError, TypeError) as e:
                if len(prompts) == 1:
                    raise
                raise type(e)(f"prompt {i}: {e}") from None
        return encoded

    def generate(self, prompts: Union[Prompt, List[Prompt]], chat: Optional[bool] = None,
                 **gen) -> List[GenerationResult]:
        """One result per prompt (text, ids, finish reason, forwards, timings).
        A list runs as one continuous batch: as a sequence finishes, the next
        waiting prompt takes its place."""
        cfg = self._config(gen)
        encoded = self._encode_all(self._prompt_list(prompts), chat)
        return self._wait_all(self._track(self._submit_all(encoded, cfg), cfg, with_text=True))

    def stream(self, prompt: Prompt, chat: Optional[bool] = None, **gen) -> TextStream:
        """Yields text as tokens are decoded (a TextStream). The request is
        queued at once; bad parameters raise here, before anything runs."""
        cfg = self._config(gen)
        ids = self.encode_prompt(prompt, chat)
        return TextStream(self._track([self._submit(ids, cfg)], cfg, with_text=True)[0])

    def stream_ids(self, prompt_ids: Sequence[int], **gen) -> TextStream:
        """Like stream() from token ids; yields nothing but "" placeholders when
        the folder has no tokenizer (use .result)."""
        cfg = self._config(gen)
        return TextStream(self._track([self._submit(prompt_ids, cfg)], cfg, with_text=False)[0])

    # ---- asyncio ---------------------------------------------------------------
    def astream(self, prompt: Prompt, chat: Optional[bool] = None, **gen) -> "AsyncTextStream":
        """``async for delta in engine.astream(prompt)``: stream() for asyncio
        (an AsyncTextStream; bad parameters raise here, before anything runs).
        Leaving early (break, aclose(), garbage collection) cancels the request
        and frees its pages; ``result`` holds the GenerationResult at the end."""
        cfg = self._config(gen)
        ids = self.encode_prompt(prompt, chat)
        return AsyncTextStream(self, self._track([self._submit(ids, cfg)], cfg, with_text=True)[0])

    def astream_ids(self, prompt_ids: Sequence[int], **gen) -> "AsyncTextStream":
        """astream() from token ids (text deltas need the folder's tokenizer)."""
        cfg = self._config(gen)
        return AsyncTextStream(self, self._track([self._submit(prompt_ids, cfg)], cfg,
                                                 with_text=self.tokenizer is not None)[0])

    async def agenerate(self, prompts: Union[Prompt, List[Prompt]], chat: Optional[bool] = None,
                        **gen) -> List[GenerationResult]:
        """``await engine.agenerate(prompts)``: generate() for asyncio (one
        continuous batch; the event loop keeps running meanwhile)."""
        cfg = self._config(gen)
        encoded = self._encode_all(self._prompt_list(prompts), chat)
        tracked = self._track(self._submit_all(encoded, cfg), cfg, with_text=True)
        try:
            for t in tracked:
                while True:
                    t.poll()
                    if t.finished:
                        break
                    await self._notifier.wait(t.request, t.version)
                    for other in tracked:  # stop strings of the others act as they arrive
                        if other is not t:
                            other.poll()
        except BaseException:  # cancelled: stop them all, free their pages
            for t in tracked:
                t.cancel()
            raise
        return self._results(tracked)
