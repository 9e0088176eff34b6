"""The PyTorch side of the LLaDA / Dream generation benchmark: the reference loops of
every official sampler (tests/full_attention_reference.py, the code the engine is tested
token-exact against; docs full_attention_dllms.md) over that file's eager forward (one
F.linear per projection, logits for every input row, K/V cached before RoPE), run in the
checkpoint's dtype as users of the official code run it: fp32 is the reference itself;
bf16 keeps the weights in bf16 and applies RoPE the official way (LLaDA:
rope_full_precision, in fp32 and back; Dream: Qwen2's cos/sin cast to bf16)."""
from __future__ import annotations

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from full_attention_reference import FullAttentionModel, reference_generate  # noqa: E402


class TorchFullAttention(FullAttentionModel):
    """FullAttentionModel in a chosen dtype (the reference casts its weights to fp32)."""

    def __init__(self, cfg: dict, weights: dict, dtype=torch.float32):
        # The reference stores every weight as weights[name].to(torch.float32); the proxies turn that
        # cast into one to `dtype` (no copy when the checkpoint already has it: no transient fp32 copy
        # of a multi-GB checkpoint).
        class As:
            def __init__(self, t):
                self.t = t

            def to(self, _):
                return self.t.to(dtype)
        super().__init__(cfg, {k: As(v) for k, v in weights.items()})
        self.dtype = dtype
        assert self.emb.dtype == dtype and self.layers[0]["q"].dtype == dtype, "FullAttentionModel changed its casts"

    def _rope(self, x, pos0):
        if x.dtype == torch.float32:
            return super()._rope(x, pos0)
        if self.family == "llada":  # rope_full_precision: rotate in fp32, back to the input dtype
            return super()._rope(x.float(), pos0).to(x.dtype)
        pos = torch.arange(pos0, pos0 + x.shape[1], dtype=torch.float32)  # Qwen2: cos/sin cast to x's dtype
        emb = torch.cat([pos[:, None] * self.inv_freq[None, :]] * 2, -1)
        h = self.hd // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * emb.cos().to(x.dtype) + rot * emb.sin().to(x.dtype)


def load_reference(model_dir: str, dtype: torch.dtype) -> TorchFullAttention:
    from safetensors.torch import load_file
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    return TorchFullAttention(cfg, load_file(os.path.join(model_dir, "model.safetensors")), dtype)


def torch_generate(ref: TorchFullAttention, prompt, **gen) -> dict:
    """One reference_generate call (the section-6 keywords of the engine), timed."""
    t = time.perf_counter()
    out = reference_generate(ref, prompt, **gen)
    wall = time.perf_counter() - t
    ids, nfe = out["ids"], out["nfe"]
    r = {"wall_s": wall, "new_tokens": len(ids), "forwards": nfe, "forwards_per_s": nfe / wall,
         "tokens_per_s": len(ids) / wall, "tokens_per_forward": len(ids) / nfe if nfe else 0.0, "ids": ids}
    if "block_lengths" in out:
        r["block_lengths"] = out["block_lengths"]
    return r
