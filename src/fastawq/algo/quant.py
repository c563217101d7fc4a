"""Group-wise integer quantization of a weight matrix (the "Q" in AWQ).

Asymmetric (zero point): per group of ``G`` input channels, with ``max ≥ 0 ≥ min`` the group's
range widened to contain zero, ``scale = (max - min).clamp(min=1e-5) / (2^b - 1)``,
``zero = clamp(-round(min / scale), 0, 2^b - 1)``, ``q = clamp(round(w / scale) + zero, 0, 2^b - 1)``.

Symmetric: ``scale = absmax.clamp(min=1e-5) / (2^(b-1) - 1)``, ``q = clamp(round(w / scale), -2^(b-1),
2^(b-1) - 1)``; codes are stored offset by ``2^(b-1)`` (a constant zero point of 8 for 4 bits), so
both variants dequantize as ``(q - zero) * scale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizedWeight:
    """Integer codes and per-group parameters of one [N, K] weight (nn.Linear orientation)."""

    codes: torch.Tensor  # uint8 [N, K], values in 0 .. 2^bits - 1
    scales: torch.Tensor  # [N, K // G], in the storage dtype
    zeros: torch.Tensor  # uint8 [N, K // G]
    group_size: int
    bits: int

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n, k = self.codes.shape
        g = self.group_size
        q = self.codes.to(dtype).view(n, k // g, g)
        z = self.zeros.to(dtype).unsqueeze(-1)
        s = self.scales.to(dtype).unsqueeze(-1)
        return ((q - z) * s).view(n, k)


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    n, k = w.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not divisible by group size {group_size}")
    return w.reshape(n, k // group_size, group_size)


def _group_params(
    wg: torch.Tensor, bits: int, zero_point: bool, scale_dtype: torch.dtype | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) per group, both shaped [N, K/G, 1] in float32; zero as float integers."""
    if zero_point:
        max_int = (1 << bits) - 1
        # the range always contains 0: identical to the reference for the usual zero-straddling
        # groups, and a group whose values all share one sign stays representable
        wmax = wg.amax(dim=-1, keepdim=True).clamp(min=0)
        wmin = wg.amin(dim=-1, keepdim=True).clamp(max=0)
        scale = (wmax - wmin).clamp(min=1e-5) / max_int
        if scale_dtype is not None:
            scale = scale.to(scale_dtype).float()
        zero = (-torch.round(wmin / scale)).clamp(0, max_int)
    else:
        half = 1 << (bits - 1)
        scale = wg.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5) / (half - 1)
        if scale_dtype is not None:
            scale = scale.to(scale_dtype).float()
        zero = torch.full_like(scale, float(half))
    return scale, zero


def quantize_weight(
    w: torch.Tensor,
    *,
    bits: int = 4,
    group_size: int = 128,
    zero_point: bool = True,
    scale_dtype: torch.dtype = torch.float16,
) -> QuantizedWeight:
    """Quantize ``w`` [N, K] group-wise along K.

    The scales are rounded to ``scale_dtype`` *before* the codes are computed, so that
    ``dequantize()`` of the result is exactly what a reader of the stored tensors sees.
    """
    n, k = w.shape
    wg = _grouped(w.detach().float(), group_size)
    scale, zero = _group_params(wg, bits, zero_point, scale_dtype)
    max_int = (1 << bits) - 1
    codes = (torch.round(wg / scale) + zero).clamp(0, max_int)
    return QuantizedWeight(
        codes=codes.view(n, k).to(torch.uint8),
        scales=scale.squeeze(-1).to(scale_dtype),
        zeros=zero.squeeze(-1).to(torch.uint8),
        group_size=group_size,
        bits=bits,
    )


def fake_quantize(w: torch.Tensor, *, bits: int = 4, group_size: int = 128, zero_point: bool = True) -> torch.Tensor:
    """Quantize-dequantize ``w`` [N, K] in float32 (no rounding of scales); returns ``w.dtype``."""
    n, k = w.shape
    wg = _grouped(w.float(), group_size)
    scale, zero = _group_params(wg, bits, zero_point, None)
    max_int = (1 << bits) - 1
    q = (torch.round(wg / scale) + zero).clamp(0, max_int)
    return ((q - zero) * scale).view(n, k).to(w.dtype)
