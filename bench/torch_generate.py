"""The PyTorch side of the generation benchmarks: the reference of the spec's
`generate` loop (tests/ref_generate.py, the code the engine is tested
token-exact against) over the reference Qwen2 forward (tests/reference.py: HF
semantics, plain eager PyTorch, one F.linear per projection, logits for every
block position) in bf16 on the given device, as users of the upstream code run it."""
from __future__ import annotations

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from ref_generate import ref_generate  # noqa: E402
from reference import RefQwen2  # noqa: E402

MASK_ID = 151665


def load_reference(model_dir: str, device: str) -> RefQwen2:
    from safetensors.torch import load_file
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    return RefQwen2(cfg, load_file(os.path.join(model_dir, "model.safetensors")), torch.bfloat16, device=device)


def torch_generate(ref: RefQwen2, prompt, max_new_tokens: int, use_block_cache: bool, threshold: float = 0.9,
                   stop_token: int = 151645) -> dict:
    sync = torch.cuda.synchronize if ref.device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    ids, forwards = ref_generate(ref, prompt, max_new_tokens, block_size=32, small_block_size=8, threshold=threshold,
                                 use_block_cache=use_block_cache, mask_id=MASK_ID, stop_token=stop_token)
    sync()
    wall = time.perf_counter() - t
    return {"use_block_cache": use_block_cache, "wall_s": wall, "new_tokens": len(ids), "forwards": forwards,
            "forwards_per_s": forwards / wall, "tokens_per_s": len(ids) / wall}
