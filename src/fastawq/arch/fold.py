"""Folding AWQ scales into a layer: exact transformations that leave its outputs unchanged.

For a scaling group with per-channel scales ``s``: the next linears' input columns are multiplied
by ``s`` and the previous op's output is divided by ``s``. How the previous op is divided depends
on its kind:

* ``norm``: ``y = x̂ · γ (+ β)`` → ``γ ← γ / s``, ``β ← β / s``
* ``norm_plus_one`` (Gemma): ``y = x̂ · (1 + γ)`` → ``γ ← (1 + γ) / s − 1``
* ``linear``: output rows of the previous linear (and its bias) are divided by ``s``
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn


class PrevKind(str, Enum):
    NORM = "norm"
    NORM_PLUS_ONE = "norm_plus_one"
    LINEAR = "linear"


@torch.no_grad()
def divide_prev(module: nn.Module, kind: PrevKind, scales: torch.Tensor) -> None:
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    s = scales.to(device=weight.device, dtype=torch.float32)
    bias = getattr(module, "bias", None)
    if kind is PrevKind.NORM:
        weight.data.copy_((weight.data.float() / s).to(weight.dtype))
    elif kind is PrevKind.NORM_PLUS_ONE:
        weight.data.copy_(((1.0 + weight.data.float()) / s - 1.0).to(weight.dtype))
    elif kind is PrevKind.LINEAR:
        weight.data.copy_((weight.data.float() / s.view(-1, 1)).to(weight.dtype))
    if isinstance(bias, torch.Tensor):
        bias.data.copy_((bias.data.float() / s).to(bias.dtype))


@torch.no_grad()
def multiply_next(linear: nn.Linear, scales: torch.Tensor) -> None:
    w = linear.weight
    s = scales.to(device=w.device, dtype=torch.float32).view(1, -1)
    w.data.copy_((w.data.float() * s).to(w.dtype))
