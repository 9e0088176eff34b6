"""Writes tiny random LLaDA and Dream checkpoints in the official layouts
(full_attention_dllms.md 2.1 and 2.2): config.json + model.safetensors, and for Dream
also the generation_config.json that DreamModel.from_pretrained insists on.

The output-head row of the mask token is zeroed (with tied weights: the embedding row), so
the mask token's logit is exactly 0 and is practically never the arg-max: the official loops
would not terminate if it were."""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import torch
from safetensors.torch import save_file

from model_factory import load_weights  # noqa: F401  (re-exported for the tests)

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def llada_config(**over) -> dict:
    """A tiny LLaDA config with every key of full_attention_dllms.md 2.1 (real values
    except the sizes and the special ids)."""
    cfg = dict(
        model_type="llada",
        architectures=["LLaDAModelLM"],
        auto_map={"AutoConfig": "configuration_llada.LLaDAConfig",
                  "AutoModel": "modeling_llada.LLaDAModelLM",
                  "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=96, mlp_ratio=4,
        vocab_size=300, embedding_size=304,
        mask_token_id=299, eos_token_id=298, pad_token_id=298,
        activation_type="silu", block_type="llama", layer_norm_type="rms", layer_norm_with_affine=True,
        rms_norm_eps=1e-5, rope=True, rope_theta=500000.0, rope_full_precision=True,
        include_bias=False, include_qkv_bias=False, bias_for_layer_norm=False,
        weight_tying=False, alibi=False, alibi_bias_max=8.0, input_emb_norm=False, scale_logits=False,
        attention_layer_norm=False, attention_layer_norm_with_affine=True, multi_query_attention=None,
        block_group_size=1, flash_attention=False,
        attention_dropout=0.0, embedding_dropout=0.0, residual_dropout=0.0,
        init_device="meta", init_fn="mitchell", init_std=0.02, init_cutoff_factor=None,
        max_sequence_length=4096, precision="amp_bf16", use_cache=False,
        torch_dtype="float32", transformers_version="4.46.3",
    )
    cfg.update(over)
    return cfg


def dream_config(**over) -> dict:
    """A tiny Dream (Qwen2 layout, q/k/v bias) config, keys of full_attention_dllms.md 2.2."""
    cfg = dict(
        model_type="Dream",
        architectures=["DreamModel"],
        auto_map={"AutoConfig": "configuration_dream.DreamConfig",
                  "AutoModel": "modeling_dream.DreamModel"},
        hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=300,
        mask_token_id=299, pad_token_id=298, bos_token_id=298, eos_token_id=298,
        rms_norm_eps=1e-6, rope_theta=1000000.0, rope_scaling=None, hidden_act="silu",
        tie_word_embeddings=False, max_position_embeddings=4096, use_sliding_window=False,
        sliding_window=None, max_window_layers=28, attention_dropout=0.0, initializer_range=0.02,
        use_cache=False, torch_dtype="float32", transformers_version="4.46.2",
    )
    cfg.update(over)
    return cfg


def _lin(g, n, k, scale=1.0):
    return torch.randn(n, k, generator=g) * (scale / k ** 0.5)


def _norm(g, n):
    return 1 + 0.1 * torch.randn(n, generator=g)


def random_llada_weights(cfg: dict, seed: int = 0) -> Dict[str, torch.Tensor]:
    """fp32 weights scaled like model_factory.random_weights: activations O(1), logits
    spread over a few units. Head row of mask_token_id zeroed (logit 0). With
    weight_tying the head is wte, whose mask row is zeroed: the mask input embedding is
    then 0 (first-layer states of mask positions coincide; later layers' RoPE separates
    them, no exact ties on these 2-layer models)."""
    g = torch.Generator().manual_seed(seed)
    D, I, E = cfg["d_model"], cfg["mlp_hidden_size"], cfg["embedding_size"]
    hd = D // cfg["n_heads"]
    kv = cfg["n_kv_heads"] * hd
    t = "model.transformer."
    w = {t + "wte.weight": torch.randn(E, D, generator=g), t + "ln_f.weight": _norm(g, D)}
    for i in range(cfg["n_layers"]):
        p = f"{t}blocks.{i}."
        w[p + "attn_norm.weight"] = _norm(g, D)
        w[p + "ff_norm.weight"] = _norm(g, D)
        w[p + "q_proj.weight"] = _lin(g, D, D, 2.0)
        w[p + "k_proj.weight"] = _lin(g, kv, D, 2.0)
        w[p + "v_proj.weight"] = _lin(g, kv, D)
        w[p + "attn_out.weight"] = _lin(g, D, D)
        w[p + "ff_proj.weight"] = _lin(g, I, D)
        w[p + "up_proj.weight"] = _lin(g, I, D)
        w[p + "ff_out.weight"] = _lin(g, D, I)
    m = cfg["mask_token_id"]
    if cfg.get("weight_tying"):
        w[t + "wte.weight"][m] = 0
    else:
        w[t + "ff_out.weight"] = _lin(g, E, D, 3.0)
        w[t + "ff_out.weight"][m] = 0
    return w


def random_dream_weights(cfg: dict, seed: int = 0) -> Dict[str, torch.Tensor]:
    """fp32 Qwen2-layout weights (q/k/v bias), lm_head row of mask_token_id zeroed."""
    g = torch.Generator().manual_seed(seed)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = H // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    w = {"model.embed_tokens.weight": torch.randn(V, H, generator=g), "model.norm.weight": _norm(g, H)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = _norm(g, H)
        w[p + "post_attention_layernorm.weight"] = _norm(g, H)
        w[p + "self_attn.q_proj.weight"] = _lin(g, q, H, 2.0)
        w[p + "self_attn.q_proj.bias"] = 0.1 * torch.randn(q, generator=g)
        w[p + "self_attn.k_proj.weight"] = _lin(g, kv, H, 2.0)
        w[p + "self_attn.k_proj.bias"] = 0.1 * torch.randn(kv, generator=g)
        w[p + "self_attn.v_proj.weight"] = _lin(g, kv, H)
        w[p + "self_attn.v_proj.bias"] = 0.1 * torch.randn(kv, generator=g)
        w[p + "self_attn.o_proj.weight"] = _lin(g, H, q)
        w[p + "mlp.gate_proj.weight"] = _lin(g, I, H)
        w[p + "mlp.up_proj.weight"] = _lin(g, I, H)
        w[p + "mlp.down_proj.weight"] = _lin(g, H, I)
    m = cfg["mask_token_id"]
    if cfg.get("tie_word_embeddings"):
        w["model.embed_tokens.weight"][m] = 0
    else:
        w["lm_head.weight"] = _lin(g, V, H, 3.0)
        w["lm_head.weight"][m] = 0
    return w


def _write(path: str, cfg: dict, weights: dict, dtype: torch.dtype) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    tensors = {k: v.to(dtype).contiguous() for k, v in weights.items()}
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return path


def write_llada(path: str, cfg: Optional[dict] = None, seed: int = 0, dtype: torch.dtype = torch.float32,
                weights: Optional[dict] = None) -> str:
    """Writes a tiny LLaDA folder (config.json, model.safetensors); returns path."""
    cfg = dict(cfg or llada_config(), torch_dtype=_DTYPE_NAMES[dtype])
    return _write(path, cfg, weights if weights is not None else random_llada_weights(cfg, seed), dtype)


def write_dream(path: str, cfg: Optional[dict] = None, seed: int = 0, dtype: torch.dtype = torch.float32,
                weights: Optional[dict] = None) -> str:
    """Writes a tiny Dream folder (config.json, generation_config.json, model.safetensors)."""
    cfg = dict(cfg or dream_config(), torch_dtype=_DTYPE_NAMES[dtype])
    _write(path, cfg, weights if weights is not None else random_dream_weights(cfg, seed), dtype)
    gen = {"_from_model_config": True, "bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
           "pad_token_id": cfg["pad_token_id"], "mask_token_id": cfg["mask_token_id"],
           "transformers_version": cfg.get("transformers_version", "4.46.2")}
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump(gen, f, indent=1)
    return path
