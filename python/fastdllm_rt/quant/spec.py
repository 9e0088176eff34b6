"""What a checkpoint's ``quantization_config`` says, checked key by key."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import LoadError

# The Qwen2 modules that GPTQ / AWQ checkpoints quantize (the rest stays float).
LAYER_MATRICES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass(frozen=True)
class QuantSpec:
    """A quantized checkpoint's layout: ``method`` "gptq" or "awq", ``bits`` 4
    or 8, ``group_size`` (0: one group per output row), GPTQ's ``desc_act`` and
    ``sym`` and whether stored zero points are offset by one (``zero_offset``,
    the GPTQ v1 convention)."""

    method: str
    bits: int
    group_size: int
    desc_act: bool = False
    sym: bool = True
    zero_offset: int = 0
    block: Optional[tuple] = None  # fp8: the (rows, cols) blocks of weight_scale_inv, else per-channel weight_scale

    @property
    def weight_format(self) -> str:
        # fp8: the CPU dequantizes to the model's dtype at load; CUDA keeps fp8 (loader.load_model)
        return "dense" if self.method == "fp8" else f"int{self.bits}"


def _get(qc: dict, path: str, *keys, default=None, types=(int,)):
    for k in keys:
        if k in qc and qc[k] is not None:
            v = qc[k]
            if isinstance(v, bool) and bool not in types:
                raise LoadError(f"{path}: 'quantization_config.{k}' must be {types[0].__name__}, got {v!r}")
            if not isinstance(v, types):
                raise LoadError(f"{path}: 'quantization_config.{k}' must be {types[0].__name__}, got {v!r}")
            return v
    return default


def quant_spec_from_config(qc, path: str) -> Optional[QuantSpec]:
    """The QuantSpec of a config.json's ``quantization_config`` (None when
    absent). Raises LoadError naming the key for anything this runtime cannot
    run exactly."""
    if qc is None:
        return None
    if not isinstance(qc, dict):
        raise LoadError(f"{path}: 'quantization_config' must be an object, got {qc!r}")
    method = qc.get("quant_method")
    if method == "gptq":
        bits = _get(qc, path, "bits", default=4)
        if bits not in (4, 8):
            raise LoadError(f"{path}: 'quantization_config.bits' is {bits}; GPTQ checkpoints of 4 or 8 bits are supported")
        fmt = str(qc.get("checkpoint_format") or "gptq").lower()
        if fmt not in ("gptq", "gptq_v2"):
            raise LoadError(f"{path}: 'quantization_config.checkpoint_format' {fmt!r} is not supported "
                            "(expected 'gptq' or 'gptq_v2')")
        for key in ("lm_head", "dynamic"):
            if qc.get(key):
                raise LoadError(f"{path}: 'quantization_config.{key}' is set; only the layer matrices may be quantized")
        pack = qc.get("pack_dtype")
        if pack not in (None, "int32", "torch.int32"):
            raise LoadError(f"{path}: 'quantization_config.pack_dtype' {pack!r} is not supported (int32 only)")
        gs = _get(qc, path, "group_size", default=128)
        desc_act = _get(qc, path, "desc_act", default=False, types=(bool,))
        sym = _get(qc, path, "sym", default=True, types=(bool,))
        zero_offset = 1 if fmt == "gptq" else 0
    elif method == "awq":
        bits = _get(qc, path, "bits", "w_bit", default=4)
        if bits != 4:
            raise LoadError(f"{path}: 'quantization_config.bits' is {bits}; AWQ checkpoints are 4-bit")
        version = str(qc.get("version") or "gemm").lower()
        if version != "gemm":
            raise LoadError(f"{path}: 'quantization_config.version' {qc.get('version')!r} is not supported "
                            "(the AWQ GEMM layout only)")
        if str(qc.get("backend") or "autoawq").lower() == "llm-awq":
            raise LoadError(f"{path}: 'quantization_config.backend' 'llm-awq' uses another packing; not supported")
        if qc.get("zero_point", True) is not True:
            raise LoadError(f"{path}: 'quantization_config.zero_point' must be true for AWQ GEMM checkpoints")
        gs = _get(qc, path, "group_size", "q_group_size", default=128)
        desc_act, sym, zero_offset = False, False, 0
    elif method == "fp8":
        fmt = str(qc.get("fmt") or "e4m3").lower()
        if fmt not in ("e4m3", "float8_e4m3fn"):
            raise LoadError(f"{path}: 'quantization_config.fmt' {fmt!r} is not supported (e4m3 only)")
        block = qc.get("weight_block_size")
        if block is not None:
            if (not isinstance(block, list) or len(block) != 2
                    or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
                raise LoadError(f"{path}: 'quantization_config.weight_block_size' must be [rows, cols], got {block!r}")
            block = tuple(block)
        return QuantSpec(method="fp8", bits=8, group_size=0, sym=True, block=block)
    elif method in ("compressed-tensors", "bitsandbytes", "exl2", "hqq", "marlin"):
        raise LoadError(f"{path}: 'quantization_config.quant_method' {method!r} is not supported "
                        "(GPTQ, AWQ and fp8 checkpoints are)")
    else:
        raise LoadError(f"{path}: 'quantization_config.quant_method' {method!r} is not supported "
                        "(expected 'gptq' or 'awq')")
    if gs == -1:
        gs = 0
    elif gs <= 0:
        raise LoadError(f"{path}: 'quantization_config.group_size' must be -1 or a positive size, got {gs}")
    skip = qc.get("modules_to_not_convert")
    if skip:
        if not isinstance(skip, list) or any(any(m in str(s) for m in LAYER_MATRICES) for s in skip):
            raise LoadError(f"{path}: 'quantization_config.modules_to_not_convert' {skip!r}: every layer matrix "
                            "must be quantized (mixed layers are not supported)")
    return QuantSpec(method=method, bits=bits, group_size=gs, desc_act=desc_act, sym=sym, zero_offset=zero_offset)
