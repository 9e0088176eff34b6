"""PyTorch reference of the Qwen2 forward, written from fast_dllm_v2.md section 1
(HF Qwen2 semantics in the model dtype): fp32 RMSNorm statistics cast back to the
model dtype, cos/sin cast to the model dtype, SDPA with a boolean mask, logits in
the model dtype. K/V of earlier tokens are passed in and returned post-RoPE.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

KV = List[Tuple[torch.Tensor, torch.Tensor]]  # per layer: K, V as [kv_heads, T, head_dim]


class RefQwen2:
    def __init__(self, cfg: dict, weights: Dict[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                 device: str = "cpu"):
        self.cfg = cfg
        self.dtype = dtype
        self.device = torch.device(device)
        self.w = {k: v.to(device=self.device, dtype=dtype) for k, v in weights.items()}
        if cfg.get("tie_word_embeddings"):  # HF ties lm_head to the embedding, ignoring any stored copy
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]
        self.H = cfg["hidden_size"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg["num_key_value_heads"]
        self.hd = cfg.get("head_dim") or self.H // self.nh
        self.eps = cfg["rms_norm_eps"]
        theta = cfg["rope_theta"]
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.hd, 2, dtype=torch.int64).float() / self.hd))
        self.inv_freq = self.inv_freq.to(self.device)

    def rms(self, x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return w * xf.to(x.dtype)

    def rope_cos_sin(self, positions):
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    @staticmethod
    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat([-x[..., h:], x[..., :h]], dim=-1)

    @torch.no_grad()
    def forward(self, ids, positions, past: Optional[KV] = None, mask: Optional[torch.Tensor] = None,
                block_cache: Optional[KV] = None, replace: int = 0):
        """ids, positions: [L] int. mask: bool [L, T_past + L] (True = attend) or None.
        block_cache (fast_dllm_v2.md 3, step 1): per layer the B-entry K/V of the
        current block; the new K/V overwrite rows [replace, replace+L) in place and
        attention runs over past + the whole block cache.
        Returns logits [L, V] (model dtype) and the new tokens' K/V per layer."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        positions = torch.as_tensor(positions, dtype=torch.long, device=self.device)
        if mask is not None:
            mask = mask.to(self.device)
        L = ids.shape[0]
        x = self.w["model.embed_tokens.weight"][ids]
        cos, sin = self.rope_cos_sin(positions)
        new_kv: KV = []
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = self.rms(x, self.w[p + "input_layernorm.weight"])
            q = F.linear(h, self.w[p + "self_attn.q_proj.weight"], self.w[p + "self_attn.q_proj.bias"])
            k = F.linear(h, self.w[p + "self_attn.k_proj.weight"], self.w[p + "self_attn.k_proj.bias"])
            v = F.linear(h, self.w[p + "self_attn.v_proj.weight"], self.w[p + "self_attn.v_proj.bias"])
            q = q.view(L, self.nh, self.hd).transpose(0, 1)
            k = k.view(L, self.nkv, self.hd).transpose(0, 1)
            v = v.view(L, self.nkv, self.hd).transpose(0, 1)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            new_kv.append((k, v))
            if block_cache is not None:
                bk, bv = block_cache[i]
                bk[:, replace:replace + L] = k
                bv[:, replace:replace + L] = v
                k, v = bk, bv
            if past is not None:
                k = torch.cat([past[i][0], k], dim=1)
                v = torch.cat([past[i][1], v], dim=1)
            rep = self.nh // self.nkv
            k = k.repeat_interleave(rep, dim=0)
            v = v.repeat_interleave(rep, dim=0)
            a = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask, is_causal=False)
            a = a[0].transpose(0, 1).reshape(L, self.nh * self.hd)
            x = x + F.linear(a, self.w[p + "self_attn.o_proj.weight"])
            h = self.rms(x, self.w[p + "post_attention_layernorm.weight"])
            g = F.linear(h, self.w[p + "mlp.gate_proj.weight"])
            u = F.linear(h, self.w[p + "mlp.up_proj.weight"])
            x = x + F.linear(F.silu(g) * u, self.w[p + "mlp.down_proj.weight"])
        x = self.rms(x, self.w["model.norm.weight"])
        return F.linear(x, self.w["lm_head.weight"]), new_kv


def block_limit(c, length, bs):
    """The key limits that express block_causal_mask(c, length, bs): query q sees
    keys [0, (floor((c+q)/bs)+1)*bs), capped at the end of the forward c+length."""
    q = np.arange(c, c + length)
    return np.minimum((q // bs + 1) * bs, c + length).astype(np.int32)


def block_causal_mask(c: int, L: int, bs: int) -> torch.Tensor:
    """fast_dllm_v2.md section 3: M[q, k] = floor((c+q)/bs) >= floor(k/bs), k in [0, c+L)."""
    q = torch.arange(c, c + L)[:, None] // bs
    k = torch.arange(c + L)[None, :] // bs
    return q >= k


def concat_kv(a: Optional[KV], b: KV) -> KV:
    if a is None:
        return [(k, v) for k, v in b]
    return [(torch.cat([ka, kb], 1), torch.cat([va, vb], 1)) for (ka, va), (kb, vb) in zip(a, b)]
