"""``fastdllm-rt quantize``: a float model folder -> a quantized one that
Engine (and other GPTQ / AWQ readers) load like any other.

Methods: ``rtn`` (round to nearest, no calibration), ``gptq`` (Hessian-aware
error compensation, optional act-order) and ``awq`` (activation-aware input
scales folded into the preceding norm / up_proj, then round to nearest). The
output is in the GPTQ layout (v1 zero points; act-order as g_idx), or for
``awq`` with int4 in the AWQ GEMM layout, with a standard quantization_config.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Dict, Optional

import numpy as np

from ..errors import LoadError
from ..safetensors_io import bf16_bits, write_safetensors
from .awq import search_scale
from .calib import LayerInputs, calibration_ids
from .codes import Codes, dequantize, rtn_quantize
from .gptq import gptq_quantize, hessian
from .layouts import codes_to_tensors, layout_problem
from .spec import LAYER_MATRICES, QuantSpec

METHODS = ("rtn", "gptq", "awq")
FORMATS = ("int8", "int4")
COPY_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja",
              "special_tokens_map.json", "vocab.json", "merges.txt")
GROUPS = {"qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "o": ("self_attn.o_proj",),
          "gate_up": ("mlp.gate_proj", "mlp.up_proj"), "down": ("mlp.down_proj",)}


class _Progress:
    """tqdm when installed, else a plain counter on stderr."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        self.n, self.total, self.desc, self.enabled = 0, total, desc, enabled
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, unit="matrix")
            except ImportError:
                pass

    def update(self, what: str):
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            print(f"\r{self.desc}: {self.n}/{self.total} {what[:60]:<60}", end="", file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


def _read_float_tensors(model_dir: str, config) -> Dict[str, np.ndarray]:
    """Every tensor of a float checkpoint as float32 (checked against the config first)."""
    import contextlib

    from ..loader import _array, _open_checked

    out = {}
    with contextlib.ExitStack() as stack:
        for path, (f, names) in _open_checked(model_dir, config, stack).items():
            for name in names:
                out[name] = _array(f, name, np)
    return out


def quantize_model(model_dir: str, out_dir: str, format: str = "int4", group_size: Optional[int] = None,
                   method: str = "rtn", calib_file: Optional[str] = None, calib_samples: int = 64,
                   calib_seq_len: int = 256, act_order: bool = False, damp: float = 0.01,
                   progress: bool = True) -> dict:
    """Writes the quantized folder; returns a summary (format, method, layout,
    sizes, seconds). Raises ValueError / LoadError naming the bad argument or file."""
    from ..loader import read_config

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if group_size is None:
        group_size = 0 if format == "int8" else 128
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 0:
        raise ValueError(f"group_size must be >= 0 (0: one group per output channel), got {group_size!r}")
    if act_order and method != "gptq":
        raise ValueError("act_order applies to method='gptq' only")
    if calib_file is not None and method == "rtn":
        raise ValueError("calib_file is used by method='gptq' or 'awq'; rtn needs no calibration")
    if not isinstance(calib_samples, int) or calib_samples < 1:
        raise ValueError(f"calib_samples must be a positive integer, got {calib_samples!r}")
    if os.path.abspath(out_dir) == os.path.abspath(model_dir):
        raise ValueError("the output folder must differ from the model folder")
    t0 = time.perf_counter()
    config = read_config(model_dir)
    if config.quant is not None:
        raise LoadError(f"{model_dir}: already quantized ({config.quant.method}, {config.quant.bits}-bit)")
    bits = int(format[3:])
    sym = bits == 8
    layout = QuantSpec(method="awq" if (method == "awq" and bits == 4) else "gptq", bits=bits,
                       group_size=group_size, desc_act=act_order, sym=sym,
                       zero_offset=1 if not (method == "awq" and bits == 4) else 0)
    matrices = [f"model.layers.{i}.{m}.weight" for i in range(config.num_hidden_layers) for m in LAYER_MATRICES]
    tensors = _read_float_tensors(model_dir, config)
    for name in matrices:
        n, k = tensors[name].shape
        problem = layout_problem(layout, n, k)
        if problem:
            raise ValueError(f"tensor '{name}': {problem}; choose another group_size")
    min_zero = layout.zero_offset  # the v1 layout cannot store a zero point of 0
    codes: Dict[str, Codes] = {}
    bar = _Progress(len(matrices), f"quantize {format} {method}", progress)

    def quantize(name, w, x=None):
        if method == "gptq":
            c = gptq_quantize(w, hessian(x), bits, group_size, sym=sym, damp=damp, act_order=act_order,
                              min_zero=min_zero)
        else:
            c = rtn_quantize(w, bits, group_size, sym=sym, min_zero=min_zero)
        codes[name] = c
        bar.update(name)
        return c

    if method == "rtn":
        for name in matrices:
            quantize(name, tensors[name])
    else:
        cal = calibration_ids(model_dir, config, calib_file, calib_samples, calib_seq_len)
        rows = sum(len(c) for c in cal)
        widest = max(config.hidden_size, config.intermediate_size)
        if method == "gptq" and rows < 2 * widest:
            # H = X^T X of fewer rows than columns is rank-deficient: GPTQ then fits
            # its calibration set and can do worse than RTN on other inputs.
            print(f"fastdllm-rt quantize: warning: {rows} calibration tokens for matrices with up to {widest} "
                  f"inputs; GPTQ wants several times more (raise --calib-samples / --calib-seq-len)",
                  file=sys.stderr)
        emb = tensors["model.embed_tokens.weight"]
        hs = [emb[ids] for ids in cal]
        layer = LayerInputs(config, config.rms_norm_eps, config.bd_size)
        for i in range(config.num_hidden_layers):
            p = f"model.layers.{i}."
            w = {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}
            if method == "gptq":
                def on_inputs(group, x, w, p=p):  # quantize on these inputs, then run the quantized matrices
                    for m in GROUPS[group]:
                        w[m + ".weight"] = dequantize(quantize(p + m + ".weight", w[m + ".weight"], x))

                hs = layer.run(hs, w, on_inputs)
            else:
                seen = {}

                def on_inputs(group, x, w):  # AWQ searches on the float layer's inputs
                    seen[group] = x[np.linspace(0, x.shape[0] - 1, min(512, x.shape[0])).astype(np.int64)]

                hs = layer.run(hs, w, on_inputs)
                _awq_fold(w, seen, bits, group_size)
                for m in LAYER_MATRICES:
                    quantize(p + m + ".weight", w[m + ".weight"])
            for k in ("input_layernorm.weight", "post_attention_layernorm.weight"):
                tensors[p + k] = w[k]  # AWQ folded its scales into the norms
    bar.close()
    return _write(model_dir, out_dir, config, tensors, codes, layout, format, method, act_order, t0)


def _awq_fold(w: Dict[str, np.ndarray], seen: Dict[str, np.ndarray], bits: int, group_size: int) -> None:
    """Scales each group's matrices by its searched input scale s and divides
    what makes that input by s: the norms for q/k/v and gate/up, up_proj's rows
    for down_proj (its input is silu(gate) * up). o_proj's input comes from the
    attention, where nothing can absorb a per-channel scale under GQA: plain RTN."""
    folds = (("qkv", "input_layernorm.weight"), ("gate_up", "post_attention_layernorm.weight"),
             ("down", "mlp.up_proj.weight"))
    scales = {g: search_scale(seen[g], [w[m + ".weight"] for m in GROUPS[g]], bits, group_size) for g, _ in folds}
    for g, into in folds:
        s = scales[g]
        for m in GROUPS[g]:
            w[m + ".weight"] = w[m + ".weight"] * s[None, :]
        w[into] = w[into] / (s[:, None] if into == "mlp.up_proj.weight" else s)


def _write(model_dir, out_dir, config, tensors, codes, layout, format, method, act_order, t0) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    src_dtype = config.torch_dtype if config.torch_dtype in ("float16", "bfloat16", "float32") else "bfloat16"
    out = {}
    for name, arr in tensors.items():
        if name in codes:
            base = name[:-len(".weight")]
            for suffix, t in codes_to_tensors(codes[name], layout).items():
                out[f"{base}.{suffix}"] = t
        elif src_dtype == "bfloat16":
            out[name] = (bf16_bits(arr), "BF16")
        elif src_dtype == "float16":
            out[name] = arr.astype(np.float16)
        else:
            out[name] = arr.astype(np.float32)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), out, metadata={"format": "pt"})
    cfg = dict(config.raw)
    qc = {"quant_method": layout.method, "bits": layout.bits, "group_size": layout.group_size or -1}
    if layout.method == "gptq":
        qc.update(desc_act=act_order, sym=layout.sym, checkpoint_format="gptq", true_sequential=True,
                  damp_percent=0.01, static_groups=False)
    else:
        qc.update(zero_point=True, version="gemm")
    qc["quantizer"] = f"fastdllm_rt {method}"
    cfg["quantization_config"] = qc
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    for fn in COPY_FILES:
        src = os.path.join(model_dir, fn)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(out_dir, fn))
    size = os.path.getsize(os.path.join(out_dir, "model.safetensors"))
    return {"out_dir": out_dir, "format": format, "method": method, "layout": layout.method,
            "group_size": layout.group_size, "act_order": act_order, "matrices": len(codes), "bytes": size,
            "seconds": round(time.perf_counter() - t0, 2)}
