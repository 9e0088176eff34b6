"""fastdllm_rt: a fast runtime for block-diffusion LLMs (Fast-dLLM v2)."""
__version__ = "0.2.0"  # the one place the version lives (pyproject.toml reads it)

from . import _C
from ._C import MemoryBudgetError, cpu_isa
from .engine import Engine, GenerationError, GenerationResult, TextStream
from .errors import LoadError
from .generation_config import GenerationConfig
from .loader import ModelConfig, load_model, read_config



def cuda_status() -> dict:
    """Whether the CUDA backend was built and which devices it sees.

    Works on any machine: without a GPU or driver it reports ``available=False``
    and a ``message`` saying why.
    """
    return _C.cuda_status()


__all__ = [
    "Engine",
    "GenerationConfig",
    "GenerationError",
    "GenerationResult",
    "LoadError",
    "MemoryBudgetError",
    "ModelConfig",
    "TextStream",
    "cpu_isa",
    "cuda_status",
    "load_model",
    "read_config",
]
