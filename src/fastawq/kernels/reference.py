"""The reference kernel: dequantize the whole weight, then one matmul. Correct everywhere, not fast."""

from __future__ import annotations

import torch

from fastawq.format.awq_gemm import dequantize_gemm


def reference_awq_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    w = dequantize_gemm(qweight, qzeros, scales, group_size, dtype=x.dtype)  # [K, N]
    y = torch.matmul(x, w)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y
