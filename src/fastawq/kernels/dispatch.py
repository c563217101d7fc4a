"""Choosing a kernel for one AWQ linear call.

A kernel is chosen from the device, dtype and number of rows; ``FASTAWQ_KERNEL`` forces one by
name. Only the reference kernel exists in this release; the registry is where faster ones go.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from fastawq.errors import FastAWQError
from fastawq.kernels.reference import reference_awq_linear

KernelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, "torch.Tensor | None"], torch.Tensor]

_KERNELS: dict[str, KernelFn] = {"reference": reference_awq_linear}


def available_kernels() -> list[str]:
    return sorted(_KERNELS)


def _forced() -> str | None:
    name = os.environ.get("FASTAWQ_KERNEL")
    if name and name not in _KERNELS:
        raise FastAWQError(
            f"FASTAWQ_KERNEL={name!r} names no kernel",
            hint=f"use one of: {', '.join(available_kernels())}, or unset it",
        )
    return name


def awq_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ W.T + bias`` for the AWQ GEMM tensors of W."""
    name = _forced() or "reference"
    return _KERNELS[name](x, qweight, qzeros, scales, group_size, bias)
