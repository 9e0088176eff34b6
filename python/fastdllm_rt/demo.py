"""A tiny random-weight Fast-dLLM v2 model folder, written without torch or a
download: config.json, model.safetensors (bf16), a byte-level tokenizer with the
Qwen2 special tokens, and the Qwen2.5 chat template. Its text is noise; it
exists so that a new user can see the whole pipeline run right after install,
and so that tests have real tokenizer files. Its lm_head can only score
lowercase letters, spaces and a little punctuation, so the noise is visible
text rather than control bytes and broken UTF-8."""
from __future__ import annotations

import json
import os

import numpy as np

from .safetensors_io import bf16_bits, write_safetensors

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "|<MASK>|"]

# The Qwen2.5 template without tools (fast_dllm_v2.md section 1).
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _byte_symbols() -> dict:
    """byte -> the printable character ByteLevel uses for it (the GPT-2 table):
    printable bytes stand for themselves, the others map to 256, 257, ..."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_byte_tokenizer(path: str) -> dict:
    """A byte-level BPE tokenizer with no merges (id b is byte b) plus the
    Qwen2 special tokens at 256..259. Returns {token: id} of the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {c: b for b, c in _byte_symbols().items()}
    assert set(vocab) == set(ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.save(os.path.join(path, "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "add_bos_token": False, "bos_token": None,
                   "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "chat_template": CHAT_TEMPLATE}, f,
                  indent=1)
    return ids


def _bf16(a: np.ndarray):
    return (bf16_bits(a), "BF16")


def write_demo_model(path: str, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                     intermediate: int = 128, seed: int = 0) -> str:
    """Writes the demo model folder to path and returns path."""
    os.makedirs(path, exist_ok=True)
    ids = write_byte_tokenizer(path)
    vocab = 264  # 256 bytes + 4 specials, rounded up to a multiple of 8
    hd = hidden // heads
    cfg = {
        "architectures": ["Fast_dLLM_QwenForCausalLM"], "model_type": "Fast_dLLM_Qwen",
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": intermediate,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "head_dim": hd, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "tie_word_embeddings": False, "max_position_embeddings": 4096, "bd_size": 32,
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"], "mask_token_id": ids["|<MASK>|"], "torch_dtype": "bfloat16",
        "fastdllm_rt_demo": "random weights: the output is noise",
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(path, "generation_config.json"), "w") as f:
        json.dump({"max_new_tokens": 96, "threshold": 0.9, "small_block_size": 8}, f, indent=1)
    rng = np.random.default_rng(seed)

    def lin(n, k, scale=1.0):
        return rng.standard_normal((n, k)).astype(np.float32) * (scale / np.sqrt(k))

    # The lm_head scores only visible characters (every other row is zero, so
    # their logits lose to the best visible one); spaces a little more, so
    # that the noise comes out as "words".
    head = np.zeros((vocab, hidden), np.float32)
    visible = [ord(c) for c in "abcdefghijklmnopqrstuvwxyz.,"]
    head[visible] = rng.standard_normal((len(visible), hidden)) * (3.0 / np.sqrt(hidden))
    head[ord(" ")] = rng.standard_normal(hidden) * (5.0 / np.sqrt(hidden))
    t = {"model.embed_tokens.weight": _bf16(rng.standard_normal((vocab, hidden)) * 0.5),
         "model.norm.weight": _bf16(np.ones(hidden)), "lm_head.weight": _bf16(head)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = _bf16(np.ones(hidden))
        t[p + "post_attention_layernorm.weight"] = _bf16(np.ones(hidden))
        for name, n in (("q", heads * hd), ("k", kv_heads * hd), ("v", kv_heads * hd)):
            # large q/k (and v/o) scales: attention then differs from position to
            # position, so the masked positions do not all predict one letter
            t[p + f"self_attn.{name}_proj.weight"] = _bf16(lin(n, hidden, 3.0 if name == "v" else 8.0))
            t[p + f"self_attn.{name}_proj.bias"] = _bf16(np.zeros(n))
        t[p + "self_attn.o_proj.weight"] = _bf16(lin(hidden, heads * hd, 3.0))
        t[p + "mlp.gate_proj.weight"] = _bf16(lin(intermediate, hidden))
        t[p + "mlp.up_proj.weight"] = _bf16(lin(intermediate, hidden))
        t[p + "mlp.down_proj.weight"] = _bf16(lin(hidden, intermediate))
    write_safetensors(os.path.join(path, "model.safetensors"), t, {"format": "pt"})
    return path
