"""Model shapes and random model folders for the benchmarks (no downloads)."""
from __future__ import annotations

import json
import os

import numpy as np

from fastdllm_rt.safetensors_io import write_safetensors

QWEN25_1_5B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                   num_attention_heads=12, num_key_value_heads=2, head_dim=128, tie_word_embeddings=True)
QWEN25_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, head_dim=128, tie_word_embeddings=False)
# --shape keys of the GPU benches: (name, shape)
SHAPES = {"1.5b": ("Qwen2.5-1.5B", QWEN25_1_5B), "7b": ("Qwen2.5-7B", QWEN25_7B)}


def bench_model_dir(root: str, key: str) -> str:
    """Where the benches keep the random bf16 model of SHAPES[key] under root."""
    return os.path.join(root, f"fastdllm_bench_{key}_bf16")


def weight_shapes(s: dict) -> dict:
    H, I, V, hd = s["hidden_size"], s["intermediate_size"], s["vocab_size"], s["head_dim"]
    q, kv = s["num_attention_heads"] * hd, s["num_key_value_heads"] * hd
    w = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
    if not s["tie_word_embeddings"]:
        w["lm_head.weight"] = (V, H)
    for i in range(s["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w.update({p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,),
                  p + "self_attn.q_proj.weight": (q, H), p + "self_attn.q_proj.bias": (q,),
                  p + "self_attn.k_proj.weight": (kv, H), p + "self_attn.k_proj.bias": (kv,),
                  p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.v_proj.bias": (kv,),
                  p + "self_attn.o_proj.weight": (H, q), p + "mlp.gate_proj.weight": (I, H),
                  p + "mlp.up_proj.weight": (I, H), p + "mlp.down_proj.weight": (H, I)})
    return w


def weight_bytes_per_forward(s: dict, bytes_per_weight: int = 2, layer_format: str = "dense",
                             group_size: int = 128) -> int:
    """Bytes of matrices a forward streams: every layer matrix and the lm_head
    (the embedding gather reads a few rows only, unless it is the tied lm_head).
    layer_format int8 / int4: the layer matrices as codes plus their fp32 scale
    and s*z per (row, group of group_size inputs; 0: per row); the lm_head stays bf16."""
    total = 0
    for name, shape in weight_shapes(s).items():
        if len(shape) == 2 and name != "model.embed_tokens.weight":
            n, k = shape
            if layer_format == "dense" or name == "lm_head.weight":
                total += n * k * bytes_per_weight
            else:
                bits = int(layer_format[3:])
                total += n * k * bits // 8 + n * (k // (group_size or k)) * 8
    if s["tie_word_embeddings"]:  # the embedding is the lm_head; untied, lm_head.weight was counted above
        total += s["vocab_size"] * s["hidden_size"] * bytes_per_weight
    return total


def write_model_folder(path: str, shapes: dict, tensors: dict, **config) -> str:
    """model.safetensors and a Qwen2 config.json (shapes, then config's overrides)."""
    write_safetensors(os.path.join(path, "model.safetensors"), tensors, {"format": "pt"})
    cfg = dict(shapes, model_type="qwen2", rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu",
               max_position_embeddings=32768, bd_size=32, bos_token_id=151643, eos_token_id=151645,
               torch_dtype="bfloat16")
    cfg.update(config)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return path


def write_random_bf16_model(path: str, shapes: dict, seed: int = 0) -> str:
    """A model folder with random bf16 weights of magnitude ~0.01 (random bits:
    fast to make, and the timing does not depend on the values)."""
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in weight_shapes(shapes).items():
        n = int(np.prod(shape))
        if name.endswith("norm.weight"):
            bits = np.full(n, 0x3F80, np.uint16)  # 1.0
        else:
            bits = (rng.integers(0, 1 << 16, n, dtype=np.uint16) & np.uint16(0x807F)) | np.uint16(0x3C00)
        tensors[name] = (bits.reshape(shape), "BF16")
    return write_model_folder(path, shapes, tensors)
