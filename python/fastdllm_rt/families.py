"""The model families this runtime runs, told apart by ``model_type`` in
config.json (full_attention_dllms.md section 2, fast_dllm_v2.md section 1).

Every family runs the same Qwen2-shaped native graph; what differs is read
here: the config keys, the checkpoint's tensor names (mapped onto the
canonical Qwen2 names the native model uses) and the decode loop the engine
asks for. LLaDA has no q/k/v bias: those canonical tensors are zeros.
"""
from __future__ import annotations

from typing import Dict, Optional

from .errors import LoadError

FAST_DLLM_V2, LLADA, DREAM = "fast_dllm_v2", "llada", "dream"
_MODEL_TYPES = {None: FAST_DLLM_V2, "qwen2": FAST_DLLM_V2, "Fast_dLLM_Qwen": FAST_DLLM_V2,
                "fast_dllm_qwen": FAST_DLLM_V2, "llada": LLADA, "LLaDA": LLADA, "Dream": DREAM, "dream": DREAM}

# The decode rules each family takes (sampler=), its default first.
SAMPLERS = {
    FAST_DLLM_V2: ("threshold", "entropy_threshold", "margin_threshold", "factor"),
    LLADA: ("low_confidence", "fixed", "threshold", "factor", "entropy_threshold", "adablock"),
    DREAM: ("entropy", "maskgit_plus", "topk_margin", "origin", "threshold", "entropy_threshold", "adablock"),
}

# Dream's own algorithms decode the whole row at once without a cache (full_attention_dllms.md 4.1).
DREAM_BLOCKLESS = ("entropy", "maskgit_plus", "topk_margin", "origin", "threshold")

# LLaDA-8B's config keys whose other values select features this runtime does not implement.
_LLADA_FIXED = {"activation_type": ("silu",), "block_type": ("llama",), "layer_norm_type": ("rms",),
                "rope": (True,), "alibi": (False, None), "include_bias": (False, None),
                "include_qkv_bias": (False, None), "input_emb_norm": (False, None), "scale_logits": (False, None),
                "attention_layer_norm": (False, None), "block_group_size": (1, None), "clip_qkv": (None,),
                "multi_query_attention": (None, False)}


def family_of(cfg: dict, path: str) -> str:
    mt = cfg.get("model_type")
    if mt not in _MODEL_TYPES:
        raise LoadError(f"{path}: 'model_type' is {mt!r}; supported: Qwen2 / Fast-dLLM v2 ('qwen2', "
                        "'Fast_dLLM_Qwen'), LLaDA ('llada') and Dream ('Dream')")
    return _MODEL_TYPES[mt]


def llada_as_qwen2(cfg: dict, path: str) -> dict:
    """LLaDA's config.json (section 2.1) in the Qwen2 keys read_config checks."""
    for key, allowed in _LLADA_FIXED.items():
        if key in cfg and cfg[key] not in allowed:
            raise LoadError(f"{path}: LLaDA '{key}' = {cfg[key]!r} is not supported (expected {allowed[0]!r})")
    for key in ("d_model", "n_heads", "n_layers"):
        if key not in cfg:
            raise LoadError(f"{path}: missing required key '{key}' (a LLaDA config)")
    out = {k: v for k, v in cfg.items()}
    out.update(
        hidden_size=cfg["d_model"],
        num_attention_heads=cfg["n_heads"],
        num_key_value_heads=cfg.get("n_kv_heads") or cfg["n_heads"],
        num_hidden_layers=cfg["n_layers"],
        # The logits have embedding_size columns; nothing slices them to vocab_size.
        vocab_size=cfg.get("embedding_size") or cfg.get("vocab_size"),
        rope_theta=cfg.get("rope_theta", 10000.0),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        tie_word_embeddings=bool(cfg.get("weight_tying", False)),
        max_position_embeddings=cfg.get("max_sequence_length", 4096),
        hidden_act="silu",
    )
    out.pop("head_dim", None)
    if cfg.get("mlp_hidden_size") is not None:
        out["intermediate_size"] = cfg["mlp_hidden_size"]
    else:
        ratio = cfg.get("mlp_ratio")
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or ratio <= 0:
            raise LoadError(f"{path}: LLaDA config needs 'mlp_hidden_size' or a positive 'mlp_ratio'")
        out["intermediate_size"] = int(ratio * cfg["d_model"])
    return out


def _llada_name(canonical: str) -> Optional[str]:
    """The LLaDA checkpoint's name of a canonical tensor; None for the q/k/v biases it does not have."""
    fixed = {"model.embed_tokens.weight": "model.transformer.wte.weight",
             "model.norm.weight": "model.transformer.ln_f.weight",
             "lm_head.weight": "model.transformer.ff_out.weight"}
    if canonical in fixed:
        return fixed[canonical]
    parts = canonical.split(".")  # model.layers.{i}.<module...>.<param>
    i, rest = parts[2], ".".join(parts[3:])
    if rest.endswith(".bias"):
        return None
    layer = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ff_norm.weight",
             "self_attn.q_proj.weight": "q_proj.weight", "self_attn.k_proj.weight": "k_proj.weight",
             "self_attn.v_proj.weight": "v_proj.weight", "self_attn.o_proj.weight": "attn_out.weight",
             "mlp.gate_proj.weight": "ff_proj.weight", "mlp.up_proj.weight": "up_proj.weight",
             "mlp.down_proj.weight": "ff_out.weight"}[rest]
    return f"model.transformer.blocks.{i}.{layer}"


def checkpoint_names(family: str, canonical) -> Dict[str, Optional[str]]:
    """canonical name -> the checkpoint's name (None: not stored, zeros)."""
    if family != LLADA:
        return {n: n for n in canonical}
    return {n: _llada_name(n) for n in canonical}
