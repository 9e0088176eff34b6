"""Generation settings, validated in one place with errors naming the parameter."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import List, Optional

from . import _C
from .families import DREAM, DREAM_BLOCKLESS, FAST_DLLM_V2, SAMPLERS
from .json_file import read_json_object
from .loader import INT32_MAX


@dataclass
class GenerationConfig:
    """Settings of one generation (fast_dllm_v2.md section 6 lists upstream defaults).

    block_size / sub_block_size / threshold follow the model card (32 / 8 / 0.9);
    temperature 0 is greedy, the setting every official evaluation uses.
    max_new_tokens is "up to this many new tokens" (length_rule="tokens");
    length_rule="upstream" keeps the official loop's count (max_new_tokens // B
    blocks, so the count depends on the prompt length: docs/decoding.md).

    sampler picks the decode rule; each family has its own (families.SAMPLERS,
    the first is its default; docs/decoding.md). For LLaDA and Dream,
    max_new_tokens is the official gen_length (exactly that many tokens are
    generated), steps the official step count (None: max_new_tokens), cache
    Fast-dLLM v1's "none" / "prefix" / "dual", and block_size the block length
    (AdaBlock: the initial one).
    """

    max_new_tokens: int = 256
    length_rule: str = "tokens"
    block_size: Optional[int] = None       # None: the model's bd_size (32 for Fast-dLLM v2)
    sub_block_size: int = 8
    threshold: float = 0.9
    sampler: Optional[str] = None          # None: the family's default (families.SAMPLERS)
    entropy_threshold: float = 0.5         # nats (entropy_threshold)
    margin_threshold: float = 0.5          # top-1 minus top-2 probability (margin_threshold)
    factor: float = 1.0                    # Fast-dLLM v1's parallel factor (factor)
    steps: Optional[int] = None            # LLaDA / Dream: the official steps (None: max_new_tokens)
    cache: str = "none"                    # LLaDA / Dream: Fast-dLLM v1's cache
    delimiter_ids: Optional[List[int]] = None  # AdaBlock; None: the family's default
    delimiter_threshold: float = math.inf  # AdaBlock; inf: fixed blocks
    use_block_cache: bool = False
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 0
    seed: int = 0
    stop: Optional[List[str]] = None       # text stop strings: the text ends before the first one
    stop_token_id: Optional[int] = None    # None: from config.json (stop_token_id, else eos_token_id)
    mask_token_id: Optional[int] = None    # None: from config.json (mask_token_id, else 151665)

    FIELDS = ("max_new_tokens", "length_rule", "block_size", "sub_block_size", "threshold", "sampler",
              "entropy_threshold", "margin_threshold", "factor", "steps", "cache", "delimiter_ids",
              "delimiter_threshold", "use_block_cache", "temperature", "top_p", "top_k", "seed", "stop",
              "stop_token_id", "mask_token_id")
    ALIASES = {"policy": "sampler"}  # the keyword's name before LLaDA / Dream
    CACHES = ("none", "prefix", "dual")
    LENGTH_RULES = ("tokens", "upstream")

    @classmethod
    def from_model_dir(cls, model_dir: str, family: str = FAST_DLLM_V2) -> "GenerationConfig":
        """Defaults, overridden by the model folder's generation_config.json where present.

        Only keys this runtime understands are taken (HF names included:
        small_block_size -> sub_block_size, stop_strings -> stop); the file's
        eos token is not the stop token (config.json decides that, as upstream
        does). For LLaDA / Dream only max_new_tokens and steps are taken: their
        samplers here are the official greedy loops, whatever sampling settings
        (temperature, top_p) the file carries for Dream's own generate. A value
        of the wrong type is an error naming the file and key."""
        cfg = cls()
        path = os.path.join(model_dir, "generation_config.json")
        if not os.path.exists(path):
            return cfg
        data = read_json_object(path)
        aliases = {"small_block_size": "sub_block_size", "bd_size": "block_size", "stop_strings": "stop"}
        for key, value in data.items():
            name = aliases.get(key, key)
            if family != FAST_DLLM_V2 and name not in ("max_new_tokens", "steps"):
                continue
            if name in cls.FIELDS and name not in ("stop_token_id", "mask_token_id") and value is not None:
                setattr(cfg, name, value)
        try:
            cfg.validate()
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return cfg

    def updated(self, **overrides) -> "GenerationConfig":
        overrides = {self.ALIASES.get(k, k): v for k, v in overrides.items()}
        unknown = [k for k in overrides if k not in self.FIELDS]
        if unknown:
            raise TypeError(f"unknown generation parameter '{unknown[0]}'; known: {', '.join(self.FIELDS)}")
        cfg = dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def integer(name, lo, hi=INT32_MAX):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
            if v > hi:
                raise ValueError(f"{name} must be at most {hi}, got {v}")

        def number(name, lo, hi, lo_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo or v > hi \
                    or (lo_open and v == lo):
                raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")

        integer("max_new_tokens", 0)
        if self.length_rule not in self.LENGTH_RULES:
            raise ValueError(f"length_rule must be one of {self.LENGTH_RULES}, got {self.length_rule!r}")
        if self.block_size is not None:
            integer("block_size", 1, 4096)
        integer("sub_block_size", 1, 4096)
        number("threshold", 0.0, 1.0)
        number("temperature", 0.0, 1e6)
        number("top_p", 0.0, 1.0, lo_open=True)
        integer("top_k", 0)
        integer("seed", 0, (1 << 64) - 1)
        known = sorted({s for names in SAMPLERS.values() for s in names})
        if self.sampler is not None and self.sampler not in known:
            raise ValueError(f"sampler must be one of {known}, got {self.sampler!r}")
        number("entropy_threshold", 0.0, 1e6)
        number("margin_threshold", 0.0, 1.0)
        number("factor", 0.0, 1e6, lo_open=True)
        if self.steps is not None:
            integer("steps", 1, 1 << 20)
        if self.cache not in self.CACHES:
            raise ValueError(f"cache must be one of {self.CACHES}, got {self.cache!r}")
        dt = self.delimiter_threshold
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or math.isnan(dt):
            raise ValueError(f"delimiter_threshold must be a number (inf: fixed blocks), got {dt!r}")
        if self.delimiter_ids is not None:
            ids = self.delimiter_ids
            if not isinstance(ids, (list, tuple)) or not ids or not all(
                    isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= INT32_MAX for t in ids):
                raise ValueError(f"delimiter_ids must be a non-empty list of token ids, got {ids!r}")
            self.delimiter_ids = list(ids)
        if not isinstance(self.use_block_cache, bool):
            raise ValueError(f"use_block_cache must be True or False, got {self.use_block_cache!r}")
        for name in ("stop_token_id", "mask_token_id"):
            if getattr(self, name) is not None:
                integer(name, 0)
        if self.stop is not None:
            if isinstance(self.stop, str):
                self.stop = [self.stop]
            if not isinstance(self.stop, (list, tuple)) or not all(isinstance(s, str) and s for s in self.stop):
                raise ValueError(f"stop must be a non-empty string or a list of them, got {self.stop!r}")
            self.stop = list(self.stop)

    def native(self, *, block_size: int, mask_id: int, stop_id: int, max_seq_len: int,
               family: str = FAST_DLLM_V2) -> "_C.GenerationParams":
        sampler = self.sampler or SAMPLERS[family][0]
        if sampler not in SAMPLERS[family]:
            raise ValueError(f"sampler={sampler!r} is not a {family} sampler; {family} models take "
                             f"{', '.join(SAMPLERS[family])}")
        if family == DREAM and self.block_size is not None and self.cache == "none" and sampler in DREAM_BLOCKLESS:
            raise ValueError(f"block_size does not apply to Dream's sampler={sampler!r} without a cache (it decodes "
                             "the whole row; cache='prefix' / 'dual' gives Fast-dLLM v1's blocks)")
        p = _C.GenerationParams()
        p.family = family
        p.sampler = sampler
        p.entropy_threshold = float(self.entropy_threshold)
        p.margin_threshold = float(self.margin_threshold)
        p.factor = float(self.factor)
        p.steps = self.steps or 0
        p.cache = self.cache
        p.delimiter_ids = list(self.delimiter_ids or [])
        p.delimiter_threshold = float(self.delimiter_threshold)
        p.max_new_tokens = self.max_new_tokens
        p.length_rule = self.length_rule
        p.block_size = self.block_size or block_size
        p.sub_block_size = self.sub_block_size
        p.threshold = float(self.threshold)
        p.use_block_cache = self.use_block_cache
        p.temperature = float(self.temperature)
        p.top_p = float(self.top_p)
        p.top_k = self.top_k
        p.seed = self.seed
        p.mask_id = self.mask_token_id if self.mask_token_id is not None else mask_id
        p.stop_id = self.stop_token_id if self.stop_token_id is not None else stop_id
        p.max_seq_len = max_seq_len
        if family == FAST_DLLM_V2 and p.block_size % p.sub_block_size:
            raise ValueError(f"sub_block_size ({p.sub_block_size}) must divide block_size ({p.block_size})")
        return p
