"""A plain PyTorch Qwen2 forward over a KV cache, the baseline of the CPU and GPU
benchmarks: same weights, same dtype, same work (new tokens over a cached prefix,
lm_head only on the rows the decoder needs)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class TorchQwen2:
    def __init__(self, cfg: dict, weights: dict, dtype=torch.bfloat16, device="cpu"):
        self.c = cfg
        self.w = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        hd = cfg["head_dim"]
        self.inv_freq = 1.0 / (cfg.get("rope_theta", 1e6) ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        self.inv_freq = self.inv_freq.to(device)
        self.dtype, self.device = dtype, device

    def rms(self, x, w):
        xf = x.float()
        return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)

    @staticmethod
    def rot(x):
        h = x.shape[-1] // 2
        return torch.cat([-x[..., h:], x[..., :h]], -1)

    @torch.inference_mode()
    def forward(self, ids, start: int, past, logit_rows: int, store: bool = False):
        """ids [L]; past: per layer (K, V) [kv_heads, T, hd]. Returns logits of the last logit_rows rows."""
        c = self.c
        L, nh, nkv, hd = ids.shape[0], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        pos = torch.arange(start, start + L, device=self.device)
        freqs = pos.float()[:, None] * self.inv_freq[None]
        emb = torch.cat([freqs, freqs], -1)
        cos, sin = emb.cos().to(self.dtype), emb.sin().to(self.dtype)
        x = self.w["model.embed_tokens.weight"][ids]
        new = []
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = self.rms(x, self.w[p + "input_layernorm.weight"])
            q = F.linear(h, self.w[p + "self_attn.q_proj.weight"], self.w[p + "self_attn.q_proj.bias"])
            k = F.linear(h, self.w[p + "self_attn.k_proj.weight"], self.w[p + "self_attn.k_proj.bias"])
            v = F.linear(h, self.w[p + "self_attn.v_proj.weight"], self.w[p + "self_attn.v_proj.bias"])
            q = q.view(L, nh, hd).transpose(0, 1)
            k = k.view(L, nkv, hd).transpose(0, 1)
            v = v.view(L, nkv, hd).transpose(0, 1)
            q = q * cos + self.rot(q) * sin
            k = k * cos + self.rot(k) * sin
            new.append((k, v))
            if past is not None:
                k = torch.cat([past[i][0], k], 1)
                v = torch.cat([past[i][1], v], 1)
            a = F.scaled_dot_product_attention(q[None], k[None], v[None], enable_gqa=True)[0]
            x = x + F.linear(a.transpose(0, 1).reshape(L, nh * hd), self.w[p + "self_attn.o_proj.weight"])
            h = self.rms(x, self.w[p + "post_attention_layernorm.weight"])
            g = F.linear(h, self.w[p + "mlp.gate_proj.weight"])
            u = F.linear(h, self.w[p + "mlp.up_proj.weight"])
            x = x + F.linear(F.silu(g) * u, self.w[p + "mlp.down_proj.weight"])
        x = self.rms(x[-logit_rows:], self.w["model.norm.weight"])
        return F.linear(x, self.lm_head), new
