"""Model shapes and random model folders for the benchmarks (no downloads)."""
from __future__ import annotations

import json
import os
import struct

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
                             group_size: int = 128, lm_head: str = "dense") -> int:
    """Bytes of matrices a forward streams: every layer matrix and the lm_head
    (the embedding gather reads a few rows only, unless it is the tied lm_head).
    layer_format int8 / int4: the layer matrices as codes plus their fp32 scale
    and s*z per (row, group of group_size inputs; 0: per row). lm_head "int8": one
    byte per weight plus 8 bytes per row, else bf16 (a tied head is the embedding)."""
    total = 0
    for name, shape in weight_shapes(s).items():
        if len(shape) == 2 and name != "model.embed_tokens.weight":
            n, k = shape
            if name == "lm_head.weight" and lm_head == "int8":
                total += n * k + n * 8
            elif layer_format == "dense" or name == "lm_head.weight":
                total += n * k * bytes_per_weight
            else:
                bits = int(layer_format[3:])
                total += n * k * bits // 8 + n * (k // (group_size or k)) * 8
    if s["tie_word_embeddings"]:  # the embedding is the lm_head; untied, lm_head.weight was counted above
        n, k = s["vocab_size"], s["hidden_size"]
        total += n * k + n * 8 if lm_head == "int8" else n * k * bytes_per_weight
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


# ---------------------------------------------------------------- full-attention dLLMs (LLaDA, Dream)
# The real layer shapes and special ids of full_attention_dllms.md 2.1 / 2.2, in each family's own
# config keys. The *_TINY shapes keep the real vocabulary and special ids (mask, eos, AdaBlock's Dream
# delimiters all stay in range) and shrink only the layers: the smoke-test size.
LLADA_8B = dict(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                vocab_size=126464, embedding_size=126464, rope_theta=500000.0, rms_norm_eps=1e-5,
                mask_token_id=126336, eos_token_id=126081, pad_token_id=126081)
LLADA_TINY = dict(LLADA_8B, d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=96)
DREAM_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0, rms_norm_eps=1e-6,
                mask_token_id=151666, pad_token_id=151643, bos_token_id=151643, eos_token_id=151643)
DREAM_TINY = dict(DREAM_7B, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
# --family keys of cpu_generate.py: (full-size name, full shape, tiny shape)
FULL_ATTENTION_SHAPES = {"llada": ("LLaDA-8B", LLADA_8B, LLADA_TINY), "dream": ("Dream-7B", DREAM_7B, DREAM_TINY)}


def layer_count(family: str, s: dict) -> int:
    return s["n_layers"] if family == "llada" else s["num_hidden_layers"]


def with_layers(family: str, s: dict, layers: int) -> dict:
    return dict(s, **{"n_layers" if family == "llada" else "num_hidden_layers": layers})


def full_attention_weight_shapes(family: str, s: dict) -> dict:
    """Tensor name -> shape in the official layout (LLaDA 2.1: no biases, separate output
    head model.transformer.ff_out; Dream 2.2: Qwen2 names with q/k/v bias, untied lm_head)."""
    if family == "dream":
        s = dict(s, head_dim=s["hidden_size"] // s["num_attention_heads"], tie_word_embeddings=False)
        return weight_shapes(s)
    D, I, E = s["d_model"], s["mlp_hidden_size"], s["embedding_size"]
    kv = s["n_kv_heads"] * (D // s["n_heads"])
    t = "model.transformer."
    w = {t + "wte.weight": (E, D), t + "ln_f.weight": (D,), t + "ff_out.weight": (E, D)}
    for i in range(s["n_layers"]):
        p = f"{t}blocks.{i}."
        w.update({p + "attn_norm.weight": (D,), p + "ff_norm.weight": (D,), p + "q_proj.weight": (D, D),
                  p + "k_proj.weight": (kv, D), p + "v_proj.weight": (kv, D), p + "attn_out.weight": (D, D),
                  p + "ff_proj.weight": (I, D), p + "up_proj.weight": (I, D), p + "ff_out.weight": (D, I)})
    return w


def full_attention_config(family: str, s: dict, dtype: str) -> dict:
    """config.json of a LLaDA ("llada") or Dream ("Dream") folder: the shape plus the fixed keys
    of full_attention_dllms.md 2.1 / 2.2 at their real values."""
    if family == "llada":
        return dict(s, model_type="llada", architectures=["LLaDAModelLM"], activation_type="silu",
                    block_type="llama", layer_norm_type="rms", layer_norm_with_affine=True, rope=True,
                    rope_full_precision=True, include_bias=False, include_qkv_bias=False, bias_for_layer_norm=False,
                    weight_tying=False, alibi=False, input_emb_norm=False, scale_logits=False,
                    attention_layer_norm=False, block_group_size=1, multi_query_attention=None,
                    max_sequence_length=4096, use_cache=False, torch_dtype=dtype)
    return dict(s, model_type="Dream", architectures=["DreamModel"], hidden_act="silu", rope_scaling=None,
                tie_word_embeddings=False, max_position_embeddings=131072, use_sliding_window=False,
                sliding_window=None, use_cache=False, torch_dtype=dtype)


def _write_safetensors_streaming(path: str, shapes: dict, tag: str, make) -> None:
    """A .safetensors file of shapes (name -> shape, all of dtype tag "BF16" / "F32"), each tensor
    made by make(name, shape) just before it is written: one tensor in memory at a time (a full-size
    embedding is 1 GB in bf16), where write_safetensors holds them all, twice."""
    size = {"BF16": 2, "F32": 4}[tag]
    header, offset = {}, 0
    for name in sorted(shapes):
        n = int(np.prod(shapes[name])) * size
        header[name] = {"dtype": tag, "shape": list(shapes[name]), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in sorted(shapes):
            arr = np.ascontiguousarray(make(name, shapes[name]))
            assert arr.nbytes == header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            arr.tofile(f)


def write_random_full_attention_model(path: str, family: str, shapes: dict, dtype: str = "bfloat16",
                                      seed: int = 0) -> str:
    """A LLaDA / Dream folder with random layer weights of magnitude ~0.01 (the random bf16
    bits of write_random_bf16_model; dtype "float32" stores the same values widened), a
    larger output head (below) and RMSNorm weights 1. The output-head row of the mask token
    is zeroed (its logit is exactly 0, never the arg-max of a random row), as
    tests/full_attention_factory.py does: the official loops would not end if the mask were
    ever proposed. Dream also gets the generation_config.json
    DreamModel.from_pretrained insists on. Kept if config.json is already there."""
    if dtype not in ("bfloat16", "float32"):
        raise ValueError(f"dtype must be bfloat16 or float32, got {dtype!r}")
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    head = "model.transformer.ff_out.weight" if family == "llada" else "lm_head.weight"
    # The head's magnitude is 2^e with e = floor(log2(2/sqrt(hidden))): logits spread over a few units
    # (std ~2-3) at every width, as the tests' weights: the decisions then do not sit at rounding
    # noise (with |w| ~0.01 a 64-wide model's rows are near-uniform over the vocabulary and fp32
    # entropies of different positions tie to rounding), and confidences stay low (~1 token a forward).
    hidden = shapes["d_model" if family == "llada" else "hidden_size"]
    head_exp = np.uint16((127 + int(np.floor(np.log2(2.0 / np.sqrt(hidden))))) << 7)

    def make(name, shape):
        n = int(np.prod(shape))
        if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            bits = np.full(n, 0x3F80, np.uint16)  # 1.0
        else:
            exp = head_exp if name == head else np.uint16(0x3C00)
            bits = (rng.integers(0, 1 << 16, n, dtype=np.uint16) & np.uint16(0x807F)) | exp
        bits = bits.reshape(shape)
        if name == head:
            bits[shapes["mask_token_id"]] = 0
        return bits if dtype == "bfloat16" else (bits.astype(np.uint32) << 16).view(np.float32)
    _write_safetensors_streaming(os.path.join(path, "model.safetensors"),
                                 full_attention_weight_shapes(family, shapes), "BF16" if dtype == "bfloat16" else "F32",
                                 make)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(full_attention_config(family, shapes, dtype), f, indent=1)
    if family == "dream":
        gen = {k: shapes[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id")}
        with open(os.path.join(path, "generation_config.json"), "w") as f:
            json.dump(dict(gen, _from_model_config=True), f, indent=1)
    return path
