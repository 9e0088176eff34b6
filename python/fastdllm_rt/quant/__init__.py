"""Low-bit weights: the checkpoint formats we read and write (GPTQ, AWQ), the
canonical codes the runtime takes, and our quantizers (RTN, GPTQ, AWQ).

Canonical form of one [N, K] matrix (fastdllm/weight_format.h):
``codes`` uint8 [N, K] in the input order ``perm`` (None: natural order),
``scales`` and ``zeros`` float32 [N, K / group_size]; W[n, perm[j]] =
scales[n, j // g] * (codes[n, j] - zeros[n, j // g]).
"""
from .spec import QuantSpec, quant_spec_from_config, LAYER_MATRICES
from .codes import Codes, rtn_quantize, dequantize

__all__ = ["QuantSpec", "quant_spec_from_config", "LAYER_MATRICES", "Codes", "rtn_quantize", "dequantize"]
