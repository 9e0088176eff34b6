"""Calibration for GPTQ and AWQ: token sequences, and a numpy forward of one
Qwen2 layer (the model's own prefill rule: positions from 0, block-causal
attention in blocks of bd_size) that yields each matrix's inputs."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

# A small built-in set, used when no calibration file is given and the folder has a tokenizer.
BUILTIN_PROMPTS = [
    "Explain why the sky is blue in a few sentences.",
    "Write a Python function that returns the n-th Fibonacci number, with a docstring.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Summarize the plot of Romeo and Juliet for a ten-year-old.",
    "Solve step by step: a train travels 120 km in 1.5 hours; what is its average speed?",
    "List three differences between TCP and UDP.",
    "Translate into French: The weather is lovely today, let us go for a walk.",
    "Give me a recipe for a simple tomato soup.",
    "Prove that the square root of 2 is irrational.",
    "Write a haiku about autumn leaves.",
    "What are the main causes of inflation?",
    "Describe how a diffusion language model generates text.",
]


def rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))


def rope(x: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """x [L, heads, hd] at positions 0..L-1 (Qwen2 rotate_half)."""
    L = x.shape[0]
    f = np.arange(L, dtype=np.float32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([f, f], axis=-1)
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    h = x.shape[-1] // 2
    rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
    return x * cos + rot * sin


def attention(q, k, v, block: int) -> np.ndarray:
    """q [L, nh, hd], k / v [L, nkv, hd] -> [L, nh * hd], block-causal."""
    L, nh, hd = q.shape
    rep = nh // k.shape[1]
    k = np.repeat(k, rep, axis=1)
    v = np.repeat(v, rep, axis=1)
    s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
    qb = np.arange(L)[:, None] // block
    kb = np.arange(L)[None, :] // block
    s = np.where((qb >= kb)[None], s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v).reshape(L, nh * hd)


def silu(x):
    return x / (1 + np.exp(-x))


class LayerInputs:
    """One layer's forward over the calibration sequences, with a hook that may
    replace each matrix group by its quantized version before it is applied
    (GPTQ propagates the quantized layer, AWQ the float one)."""

    def __init__(self, cfg, eps: float, block: int):
        self.cfg = cfg
        self.eps = eps
        self.block = block
        hd = cfg.head_dim
        self.inv_freq = (1.0 / cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float32) / hd)).astype(np.float32)

    def run(self, hs: List[np.ndarray], w: Dict[str, np.ndarray],
            on_inputs: Callable[[str, np.ndarray, Dict[str, np.ndarray]], None]) -> List[np.ndarray]:
        """hs: hidden states per sequence. on_inputs(group, X, w) sees each
        group's stacked inputs ("qkv", "o", "gate_up", "down") before the group
        is applied, and may change w's matrices (quantized stand-ins). Returns
        the next hidden states."""
        c = self.cfg
        nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        x1 = [rms(h, w["input_layernorm.weight"], self.eps) for h in hs]
        on_inputs("qkv", np.concatenate(x1), w)
        att = []
        for x in x1:
            L = x.shape[0]
            q = (x @ w["self_attn.q_proj.weight"].T + w["self_attn.q_proj.bias"]).reshape(L, nh, hd)
            k = (x @ w["self_attn.k_proj.weight"].T + w["self_attn.k_proj.bias"]).reshape(L, nkv, hd)
            v = (x @ w["self_attn.v_proj.weight"].T + w["self_attn.v_proj.bias"]).reshape(L, nkv, hd)
            att.append(attention(rope(q, self.inv_freq), rope(k, self.inv_freq), v, self.block))
        on_inputs("o", np.concatenate(att), w)
        hs = [h + a @ w["self_attn.o_proj.weight"].T for h, a in zip(hs, att)]
        x3 = [rms(h, w["post_attention_layernorm.weight"], self.eps) for h in hs]
        on_inputs("gate_up", np.concatenate(x3), w)
        act = [silu(x @ w["mlp.gate_proj.weight"].T) * (x @ w["mlp.up_proj.weight"].T) for x in x3]
        on_inputs("down", np.concatenate(act), w)
        return [h + a @ w["mlp.down_proj.weight"].T for h, a in zip(hs, act)]


def calibration_ids(model_dir: str, config, calib_file: Optional[str], samples: int, seq_len: int,
                    seed: int = 0) -> List[np.ndarray]:
    """Token sequences: from calib_file (one text per line, or the whole file
    cut into windows), else the built-in prompts followed by the model's own
    sampled continuation (a seed per sample); without a tokenizer, the model's own generations from
    random prompts."""
    import os

    from ..text import TextTokenizer

    has_tok = os.path.exists(os.path.join(model_dir, "tokenizer.json"))
    if calib_file is not None:
        if not has_tok:
            raise ValueError(f"{model_dir}: --calib-file needs the model's tokenizer.json")
        try:
            with open(calib_file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{calib_file}: cannot read calibration text ({e})") from None
        tok = TextTokenizer(model_dir)
        ids = tok.encode(text)
        if len(ids) < 8:
            raise ValueError(f"{calib_file}: too little text for calibration ({len(ids)} tokens)")
        out = [np.asarray(ids[i:i + seq_len], np.int32) for i in range(0, len(ids), seq_len)]
        return [o for o in out if len(o) >= 8][:samples]
    from ..engine import Engine

    rng = np.random.default_rng(seed)
    with Engine(model_dir, max_batch_size=8) as e:
        if has_tok:
            prompts = [e.encode_prompt(p) for p in BUILTIN_PROMPTS]
        else:
            prompts = [list(map(int, rng.integers(0, config.vocab_size, 16))) for _ in range(samples)]
        prompts = (prompts * (samples // len(prompts) + 1))[:samples]
        gen = max(32, seq_len - max(len(p) for p in prompts)) // 32 * 32
        # sampled continuations, a seed per sample: repeated prompts still give distinct sequences
        streams = [e.stream_ids(p, max_new_tokens=gen, temperature=0.7, top_p=0.95, seed=seed + i)
                   for i, p in enumerate(prompts)]  # all queued at once: they decode as one batch
        results = []
        for s in streams:
            for _ in s:
                pass
            results.append(s.result)
    return [np.asarray((list(p) + list(r.token_ids))[:seq_len], np.int32) for p, r in zip(prompts, results)]
