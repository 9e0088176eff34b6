"""Writes tiny random Qwen2 / Fast-dLLM v2 model folders in the real layout
(config.json + safetensors, single file or sharded with an index)."""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import torch
from safetensors.torch import save_file

TINY = dict(vocab_size=331, hidden_size=80, intermediate_size=136, num_hidden_layers=2,
            num_attention_heads=5, num_key_value_heads=1, head_dim=16)


def make_config(**over) -> dict:
    cfg = dict(TINY)
    cfg.update(
        model_type="Fast_dLLM_Qwen",
        architectures=["Fast_dLLM_QwenForCausalLM"],
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        tie_word_embeddings=False,
        max_position_embeddings=4096,
        bd_size=32,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        torch_dtype="float32",
    )
    cfg.update(over)
    cfg.setdefault("mask_token_id", cfg["vocab_size"] - 1)
    return cfg


def random_weights(cfg: dict, seed: int = 0) -> Dict[str, torch.Tensor]:
    """fp32 weights scaled so that activations stay O(1) and logits spread over a
    few units: softmax confidences then cover (0, 1), which exercises thresholds."""
    g = torch.Generator().manual_seed(seed)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or H // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd

    def lin(n, k, scale=1.0):
        return torch.randn(n, k, generator=g) * (scale / k ** 0.5)

    w = {"model.embed_tokens.weight": torch.randn(V, H, generator=g),
         "model.norm.weight": 1 + 0.1 * torch.randn(H, generator=g)}
    if not cfg.get("tie_word_embeddings"):
        w["lm_head.weight"] = lin(V, H, 3.0)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(H, generator=g)
        w[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(H, generator=g)
        w[p + "self_attn.q_proj.weight"] = lin(q, H, 2.0)
        w[p + "self_attn.q_proj.bias"] = 0.1 * torch.randn(q, generator=g)
        w[p + "self_attn.k_proj.weight"] = lin(kv, H, 2.0)
        w[p + "self_attn.k_proj.bias"] = 0.1 * torch.randn(kv, generator=g)
        w[p + "self_attn.v_proj.weight"] = lin(kv, H)
        w[p + "self_attn.v_proj.bias"] = 0.1 * torch.randn(kv, generator=g)
        w[p + "self_attn.o_proj.weight"] = lin(H, q)
        w[p + "mlp.gate_proj.weight"] = lin(I, H)
        w[p + "mlp.up_proj.weight"] = lin(I, H)
        w[p + "mlp.down_proj.weight"] = lin(H, I)
    return w


def write_model(path: str, cfg: Optional[dict] = None, weights: Optional[dict] = None, *,
                dtype: torch.dtype = torch.float32, shards: int = 1, seed: int = 0) -> str:
    """Writes config.json and the weights (cast to dtype) to path; returns path."""
    cfg = dict(cfg or make_config())
    cfg["torch_dtype"] = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    weights = weights if weights is not None else random_weights(cfg, seed)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    tensors = {k: v.to(dtype).contiguous() for k, v in weights.items()}
    if shards == 1:
        save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        return path
    names = sorted(tensors)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, os.path.join(path, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    return path


def load_weights(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a model folder as torch tensors (for the reference)."""
    from safetensors.torch import load_file
    out = {}
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors"):
            out.update(load_file(os.path.join(path, fn)))
    return out
