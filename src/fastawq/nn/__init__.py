"""Torch modules that hold quantized weights."""

from fastawq.nn.qlinear import AWQLinear

__all__ = ["AWQLinear"]
