"""fastawq: activation-aware 4-bit weight quantization for Hugging Face causal LMs.

Importing ``fastawq`` is cheap: it does not touch CUDA and imports transformers only when a
function that needs it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastawq.config import AWQConfig, Layout
from fastawq.errors import FastAWQError

__version__ = "0.1.0"

_LAZY = {
    "AutoAWQForCausalLM": "fastawq.compat",
    "AWQModel": "fastawq.compat",
    "SearchOptions": "fastawq.algo.search",
    "quantize": "fastawq.api",
    "save_quantized": "fastawq.api",
    "load_quantized": "fastawq.api",
    "load_pretrained": "fastawq.loading",
    "quantize_model": "fastawq.pipeline",
    "QuantizeResult": "fastawq.pipeline",
    "AWQLinear": "fastawq.nn.qlinear",
}

__all__ = ["AWQConfig", "FastAWQError", "Layout", *_LAZY]

if TYPE_CHECKING:
    from fastawq.algo.search import SearchOptions
    from fastawq.api import load_quantized, quantize, save_quantized
    from fastawq.compat import AutoAWQForCausalLM, AWQModel
    from fastawq.loading import load_pretrained
    from fastawq.nn.qlinear import AWQLinear
    from fastawq.pipeline import QuantizeResult, quantize_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastawq' has no attribute {name!r}")
