"""Model folder -> native model: config.json, then the safetensors shards.

The folder is a Hugging Face checkpoint of a Qwen2 / Fast-dLLM v2, LLaDA or
Dream model (families.py tells them apart): ``config.json`` plus
``model.safetensors`` or ``model.safetensors.index.json`` with its shards. Every problem raises :class:`LoadError` naming the file and the
config key or tensor at fault.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from . import _C
from . import families
from .errors import LoadError
from .json_file import read_json_object
from .quant import layouts
from .quant.codes import rtn_quantize
from .quant.spec import LAYER_MATRICES, QuantSpec, quant_spec_from_config
from .safetensors_io import FLOAT_DTYPES, SafetensorsFile

DEFAULT_MASK_ID = 151665  # fast_dllm_v2.md section 1: '|<MASK>|', hard-coded upstream
DTYPES = ("auto", "float32", "float16", "bfloat16")
QUANTIZE = (None, "int8", "int4", "fp8")


@dataclass(frozen=True)
class ModelConfig:
    """What the runtime reads from config.json."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    bd_size: int
    mask_token_id: int
    stop_token_id: int
    bos_token_id: Optional[int]
    eos_token_ids: tuple
    pad_token_id: Optional[int]
    torch_dtype: Optional[str]
    max_position_embeddings: int
    quant: Optional[QuantSpec] = None  # a GPTQ / AWQ checkpoint's layout
    family: str = families.FAST_DLLM_V2  # fast_dllm_v2, llada or dream: the decode loop
    raw: dict = field(repr=False, compare=False, default_factory=dict)

    def native_dict(self) -> dict:
        keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rope_theta", "rms_norm_eps", "tie_word_embeddings")
        return {k: getattr(self, k) for k in keys}


INT32_MAX = (1 << 31) - 1


def _int(cfg: dict, key: str, path: str, default=None, minimum: int = 1, maximum: int = INT32_MAX) -> int:
    """An integer key within [minimum, maximum]: the runtime's sizes and ids are
    32-bit, and a value that does not fit must fail here, not wrap silently."""
    if key not in cfg or cfg[key] is None:
        if default is None:
            raise LoadError(f"{path}: missing required key '{key}'")
        return default
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise LoadError(f"{path}: '{key}' must be an integer, got {v!r}")
    if v < minimum:
        raise LoadError(f"{path}: '{key}' must be >= {minimum}, got {v}")
    if v > maximum:
        raise LoadError(f"{path}: '{key}' must be <= {maximum}, got {v}")
    return v


def _float(cfg: dict, key: str, path: str, default: float, lo: float, hi: float) -> float:
    """A finite number in [lo, hi] (inf, NaN and absurd magnitudes are errors)."""
    v = cfg.get(key, default)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise LoadError(f"{path}: '{key}' must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise LoadError(f"{path}: '{key}' must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
    return v


def read_config(model_dir: str) -> ModelConfig:
    """Reads and checks ``config.json`` of a model folder."""
    if not os.path.isdir(model_dir):
        raise LoadError(f"{model_dir}: not a directory (expected a Hugging Face model folder)")
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise LoadError(f"{path}: not found (a model folder needs config.json)")
    cfg = read_json_object(path, LoadError)

    family = families.family_of(cfg, path)
    raw = cfg
    if family == families.LLADA:
        cfg = families.llada_as_qwen2(cfg, path)
    if cfg.get("rope_scaling") not in (None, {}):
        raise LoadError(f"{path}: 'rope_scaling' {cfg['rope_scaling']!r} is not supported (default RoPE only)")
    if cfg.get("hidden_act", "silu") != "silu":
        raise LoadError(f"{path}: 'hidden_act' must be 'silu', got {cfg['hidden_act']!r}")
    # Features of the Qwen2 config that this runtime does not implement: refused
    # by name rather than run as if they were not there.
    if cfg.get("use_sliding_window"):
        raise LoadError(f"{path}: 'use_sliding_window': true is not supported (full attention only)")
    layer_types = cfg.get("layer_types")
    if layer_types is not None and (not isinstance(layer_types, list)
                                    or any(t != "full_attention" for t in layer_types)):
        raise LoadError(f"{path}: 'layer_types' must all be 'full_attention', got {layer_types!r}")
    quant = quant_spec_from_config(cfg.get("quantization_config"), path)
    if quant is not None and family == families.LLADA:
        raise LoadError(f"{path}: 'quantization_config' ({quant.method}) is read for Qwen2 / Dream tensor names; "
                        "quantize a LLaDA model at load with Engine(path, quantize='int8' | 'int4')")

    hidden = _int(cfg, "hidden_size", path, maximum=1 << 20)
    heads = _int(cfg, "num_attention_heads", path)
    kv_heads = _int(cfg, "num_key_value_heads", path, default=heads)
    if heads % kv_heads:
        raise LoadError(f"{path}: 'num_attention_heads' ({heads}) must be a multiple of "
                        f"'num_key_value_heads' ({kv_heads})")
    if "head_dim" in cfg and cfg["head_dim"] is not None:
        head_dim = _int(cfg, "head_dim", path, maximum=1024)
    else:
        if hidden % heads:
            raise LoadError(f"{path}: 'hidden_size' ({hidden}) is not a multiple of "
                            f"'num_attention_heads' ({heads}) and no 'head_dim' is given")
        head_dim = hidden // heads
    if head_dim % 2:
        raise LoadError(f"{path}: head_dim {head_dim} must be even (RoPE rotates halves)")
    vocab = _int(cfg, "vocab_size", path, maximum=1 << 24)

    eos = cfg.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
    if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= INT32_MAX for t in eos_ids):
        raise LoadError(f"{path}: 'eos_token_id' must be a token id or a list of them, got {eos!r}")
    mask_id = _int(cfg, "mask_token_id", path, default=DEFAULT_MASK_ID, minimum=0)
    if "stop_token_id" in cfg:
        stop_id = _int(cfg, "stop_token_id", path, minimum=0)
    elif eos_ids:
        stop_id = eos_ids[0]
    else:
        raise LoadError(f"{path}: neither 'stop_token_id' nor 'eos_token_id' is set; the decoder needs a stop token")
    for key, tid in (("mask_token_id", mask_id), ("stop_token_id", stop_id)):
        if not 0 <= tid < vocab:
            raise LoadError(f"{path}: '{key}' {tid} is outside the vocabulary [0, {vocab}); set 'mask_token_id' / "
                            "'stop_token_id' in config.json for models with a small vocabulary")
    if mask_id == stop_id:
        raise LoadError(f"{path}: 'mask_token_id' and the stop token ('stop_token_id', else 'eos_token_id') are "
                        f"both {mask_id}; a stop token that is also the mask would end every block at once")
    theta = _float(cfg, "rope_theta", path, 10000.0, 1e-3, 1e12)
    eps = _float(cfg, "rms_norm_eps", path, 1e-6, 0.0, 0.1)
    tie = cfg.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        raise LoadError(f"{path}: 'tie_word_embeddings' must be true or false, got {tie!r}")
    pad = cfg.get("pad_token_id")
    bos = cfg.get("bos_token_id")
    return ModelConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=_int(cfg, "intermediate_size", path, maximum=1 << 22),
        num_hidden_layers=_int(cfg, "num_hidden_layers", path, maximum=4096),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        rope_theta=theta,
        rms_norm_eps=eps,
        tie_word_embeddings=tie,
        bd_size=_int(cfg, "bd_size", path, default=32, maximum=4096),
        mask_token_id=mask_id,
        stop_token_id=stop_id,
        bos_token_id=bos if isinstance(bos, int) else None,
        eos_token_ids=eos_ids,
        pad_token_id=pad if isinstance(pad, int) else None,
        torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
        max_position_embeddings=_int(cfg, "max_position_embeddings", path, default=32768),
        quant=quant,
        family=family,
        raw=raw,
    )


def shard_map(model_dir: str) -> Dict[str, str]:
    """tensor name -> shard path, from the index or the single model.safetensors."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise LoadError(f"{index}: not a safetensors index (needs a 'weight_map' object): {e}") from None
        out = {}
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or os.path.basename(shard) != shard:
                raise LoadError(f"{index}: tensor '{name}' maps to an invalid shard name {shard!r}")
            path = os.path.join(model_dir, shard)
            if not os.path.exists(path):
                raise LoadError(f"{index}: tensor '{name}' is in shard '{shard}', which does not exist")
            out[name] = path
        return out
    if os.path.exists(single):
        with SafetensorsFile(single) as f:
            return {e.name: single for e in f}
    raise LoadError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


def checkpoint_dtype(config: ModelConfig) -> str:
    """The weight dtype config.json declares (torch_dtype); bfloat16 if it declares none."""
    if config.torch_dtype in ("float32", "float16", "bfloat16"):
        return config.torch_dtype
    return "bfloat16"


def _is_layer_matrix(name: str) -> bool:
    return name.startswith("model.layers.") and name.endswith(".weight") and \
        any(name.endswith(m + ".weight") for m in LAYER_MATRICES)


def expected_tensors(model_dir: str, config: ModelConfig) -> Dict[str, tuple]:
    """name -> (shape, allowed safetensors dtypes, required) of the checkpoint:
    float tensors, and for a GPTQ / AWQ checkpoint each layer matrix's
    qweight / qzeros / scales (/ g_idx, optional) instead of its weight."""
    cfg_path = os.path.join(model_dir, "config.json")
    try:
        dense = _C.checkpoint_tensors(config.native_dict())
    except ValueError as e:
        raise LoadError(f"{cfg_path}: {e}") from None
    out = {}
    stored = families.checkpoint_names(config.family, dense)
    for name, shape in dense.items():
        if stored[name] is None:
            continue
        if config.quant is None or not _is_layer_matrix(name):
            out[stored[name]] = (tuple(shape), tuple(FLOAT_DTYPES), True)
            continue
        n, k = shape
        problem = layouts.layout_problem(config.quant, n, k)
        if problem:
            raise LoadError(f"{cfg_path}: 'quantization_config' does not fit tensor '{name}': {problem}")
        base = name[: -len(".weight")]
        for suffix, (sh, dts) in layouts.tensor_shapes(config.quant, n, k).items():
            out[f"{base}.{suffix}"] = (sh, dts, suffix != "g_idx")
    return out


def _open_checked(model_dir: str, config: ModelConfig, stack: contextlib.ExitStack) -> Dict[str, tuple]:
    """Opens every shard the config needs once (closed with `stack`) and checks
    each tensor header against the config (names, dtype, shapes; byte ranges
    when the header is read). Returns {path: (file, names in it)}.
    Raises LoadError naming the file and tensor."""
    shards = shard_map(model_dir)
    expected_all = expected_tensors(model_dir, config)
    expected = {n: v for n, v in expected_all.items() if v[2] or n in shards}
    missing = [n for n in expected if n not in shards]
    if missing:
        raise LoadError(f"{model_dir}: tensor '{missing[0]}' is missing from the checkpoint"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    by_file: Dict[str, List[str]] = {}
    for name in expected:
        by_file.setdefault(shards[name], []).append(name)
    files = {}
    for path, names in sorted(by_file.items()):
        f = stack.enter_context(SafetensorsFile(path))
        for name in names:
            ent = f.entries.get(name)
            if ent is None:
                raise LoadError(f"{path}: tensor '{name}' is listed in the index but not in this shard")
            shape, dtypes, _ = expected[name]
            if ent.dtype not in dtypes:
                raise LoadError(f"{path}: tensor '{name}' has dtype {ent.dtype}; "
                                f"expected one of {sorted(dtypes)}")
            if shape is not None and list(ent.shape) != list(shape):
                raise LoadError(f"{path}: tensor '{name}' has shape {list(ent.shape)}, "
                                f"expected {list(shape)} from config.json")
        files[path] = (f, names)
    return files


def check_checkpoint(model_dir: str, config: ModelConfig) -> List[str]:
    """Checks every tensor header of the checkpoint against the config (names,
    float dtype, shapes, byte ranges) without loading anything; returns the
    files holding the model's tensors. Raises LoadError naming the file and tensor."""
    with contextlib.ExitStack() as stack:
        return list(_open_checked(model_dir, config, stack))


def _array(f: SafetensorsFile, name: str, np):
    """A tensor as a numpy array: float tensors as float32, integers as they are (a copy)."""
    ent = f.entries[name]
    view = f.data(name)
    try:
        raw = np.frombuffer(view, dtype={"F32": np.float32, "F16": np.float16, "BF16": np.uint16,
                                         "I32": np.int32, "F8_E4M3": np.uint8}[ent.dtype]).reshape(ent.shape)
        if ent.dtype == "BF16":
            out = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            out = raw.astype(np.float32) if ent.dtype == "F16" else raw.copy()
        del raw  # no numpy view may outlive the memoryview
        return out
    finally:
        view.release()


def load_model(model_dir: str, dtype: str = "auto", config: Optional[ModelConfig] = None, device: str = "cpu",
               quantize: Optional[str] = None, group_size: Optional[int] = None, lm_head: Optional[str] = None):
    """Loads the weights of a model folder into a native ``_C.Model``.

    ``dtype`` is the weight storage dtype: ``auto`` keeps the checkpoint's
    (``torch_dtype`` in config.json), or one of float32 / float16 / bfloat16.
    Activations are fp32 whatever the weight dtype. ``device``: "cpu" or "cuda".
    A GPTQ / AWQ checkpoint loads its layer matrices as int4 / int8 codes.
    ``quantize`` ("int8" or "int4") quantizes a float checkpoint's layer
    matrices at load with round-to-nearest (int8: per-channel symmetric; int4:
    groups of ``group_size``, default 128, with zero points); the embedding,
    lm_head and norms stay in ``dtype``. "fp8" (CUDA only) stores them as E4M3
    with a scale per output row and runs the W8A8 GEMM (activations quantized
    per token). An fp8 checkpoint runs as fp8 on CUDA and loads dequantized on
    the CPU. ``lm_head="int8"`` stores the output head (a tied model: a copy
    of the embedding) as int8 with one scale per row (round to nearest): at
    the 1.5B shape it is 467 MB of bf16 that every forward reads.
    The checkpoint's headers are checked against the config first, so a bad
    folder fails before any memory is taken for it.
    """
    import numpy as np

    if dtype not in DTYPES:
        raise LoadError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if quantize not in QUANTIZE:
        raise LoadError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    config = config or read_config(model_dir)
    if quantize and config.quant is not None:
        raise LoadError(f"{model_dir}: the checkpoint is already quantized ({config.quant.method}, "
                        f"{config.quant.bits}-bit); quantize= applies to float checkpoints")
    if group_size is not None and quantize not in ("int8", "int4"):
        raise LoadError("group_size applies only with quantize='int8' or 'int4'")
    if lm_head not in (None, "int8"):
        raise LoadError(f"lm_head must be None (the model dtype) or 'int8', got {lm_head!r}")
    if quantize == "fp8" and device != "cuda":
        raise LoadError("quantize='fp8' runs on CUDA (Hopper fp8 tensor cores); on the CPU use 'int8' or 'int4'")
    wdtype = checkpoint_dtype(config) if dtype == "auto" else dtype
    spec = config.quant
    if quantize == "fp8":
        fmt, gs = "fp8", 0
    elif quantize:
        gs = (0 if quantize == "int8" else 128) if group_size is None else group_size
        if isinstance(gs, bool) or not isinstance(gs, int) or gs < 0:
            raise LoadError(f"group_size must be a non-negative integer (0: per output channel), got {group_size!r}")
        fmt, gs = quantize, gs
    elif spec is not None and spec.method == "fp8" and device == "cuda":
        fmt, gs = "fp8", 0  # W8A8 on the GPU; the CPU dequantizes at load
    elif spec is not None:
        fmt, gs = spec.weight_format, spec.group_size
    else:
        fmt, gs = "dense", 0
    cfg_path = os.path.join(model_dir, "config.json")
    with contextlib.ExitStack() as stack:
        files = _open_checked(model_dir, config, stack)  # before any memory is taken for the model
        try:
            model = _C.Model(config.native_dict(), wdtype, device, fmt, gs, lm_head or "dense")
        except ValueError as e:
            raise LoadError(f"{cfg_path}: {e}") from None
        shapes = _C.checkpoint_tensors(config.native_dict())
        names_of = families.checkpoint_names(config.family, shapes)  # canonical -> stored (None: zeros)
        canonical = {stored: name for name, stored in names_of.items() if stored is not None}
        parts: Dict[str, dict] = {}  # layer matrix -> its quantized tensors, until complete
        for path, (f, names) in files.items():
            for stored_name in names:
                ent = f.entries[stored_name]
                name = canonical.get(stored_name, stored_name)
                try:
                    if spec is not None and spec.method == "fp8" and (
                            name.endswith((".weight_scale", ".weight_scale_inv")) or _is_layer_matrix(name)):
                        base = name[: name.rindex(".weight")]
                        got = parts.setdefault(base, {})
                        got[name[len(base) + 1:]] = _array(f, stored_name, np)
                        scale = got.get("weight_scale", got.get("weight_scale_inv"))
                        if "weight" in got and scale is not None:
                            if fmt == "fp8":
                                codes, s = layouts.fp8_rows(got["weight"], scale, spec, base)
                                model.set_quantized_weight(base + ".weight", codes, s[:, None],
                                                           np.zeros_like(s[:, None]), None)
                            else:
                                w = layouts.fp8_to_float(got["weight"], scale, spec, base)
                                model.set_weight(base + ".weight", w, "float32", list(w.shape))
                            del parts[base]
                    elif spec is not None and name.startswith("model.layers.") and name.rsplit(".", 1)[1] in (
                            "qweight", "qzeros", "scales", "g_idx"):
                        base, suffix = name.rsplit(".", 1)
                        got = parts.setdefault(base, {})
                        got[suffix] = _array(f, stored_name, np)
                        need = ("qweight", "qzeros", "scales")
                        if all(k in got for k in need) and ("g_idx" in got or not _has(files, base + ".g_idx")):
                            n, k = shapes[base + ".weight"]
                            codes = layouts.to_codes(got, spec, n, k, base)
                            model.set_quantized_weight(base + ".weight", codes.codes, codes.scales, codes.zeros,
                                                       codes.perm)
                            del parts[base]
                    elif lm_head and name in ("lm_head.weight", "model.embed_tokens.weight"):
                        w = _array(f, stored_name, np)
                        if name == "model.embed_tokens.weight":
                            model.set_weight(name, w, "float32", list(w.shape))
                        if name == "lm_head.weight" or config.tie_word_embeddings:
                            codes = rtn_quantize(w, 8, 0)
                            model.set_quantized_weight("lm_head.weight", codes.codes, codes.scales, codes.zeros, None)
                    elif quantize and _is_layer_matrix(name):
                        w = _array(f, stored_name, np)
                        bad = int(w.size - np.count_nonzero(np.isfinite(w)))
                        if bad:
                            raise ValueError(f"tensor '{name}' holds {bad} non-finite values (NaN or inf) of "
                                             f"{w.size}; the checkpoint is corrupt")
                        if quantize == "fp8":
                            q, s = layouts.fp8_rows(w, None, None, name)
                            model.set_quantized_weight(name, q, s[:, None], np.zeros_like(s[:, None]), None)
                        else:
                            codes = rtn_quantize(w, int(quantize[3:]), gs)
                            model.set_quantized_weight(name, codes.codes, codes.scales, codes.zeros, None)
                    else:
                        view = f.data(stored_name)
                        try:
                            model.set_weight(name, view, FLOAT_DTYPES[ent.dtype][0], list(ent.shape))
                        finally:
                            view.release()
                except ValueError as e:
                    raise LoadError(f"{path}: {e}") from None
        for name, stored in names_of.items():
            if stored is None:  # a tensor this family does not have (LLaDA's q/k/v bias): zeros
                model.set_weight(name, np.zeros(shapes[name], np.float32), "float32", list(shapes[name]))
    model.finalize()
    return model


def _has(files: Dict[str, tuple], name: str) -> bool:
    return any(name in names for _, names in files.values())
