"""On-disk layouts other than AWQ GEMM, each converted to and from the GEMM tensors exactly.

Every function works on the tensors of one linear layer (in_features K, out_features N, group size G).

GEMV (``quant_method: awq, version: gemv``)
    ``qweight`` int32 [N, K/8], nibble ``i`` of word ``j`` holding input ``8j + i``; ``qzeros`` int32
    [N, W] (zero points packed the same way along the groups); ``scales`` fp16 [N, 8W]; W is
    ceil(K/G/8) rounded up to a multiple of 1 (G ≥ 128), 2 (G = 64) or 4 (G = 32); padding is zero.

compressed-tensors ``pack-quantized`` (llm-compressor, vLLM)
    ``weight_packed`` int32 [N, K/8] packed like GEMV's qweight, values stored with a +8 offset
    (signed int4 q − 8 ↔ AWQ code q, so the nibbles are the AWQ codes); ``weight_scale`` [N, K/G];
    ``weight_zero_point`` int32 [ceil(N/8), K/G] packed along N, also offset by 8 (so again the AWQ
    zero points), present only for asymmetric quantization; ``weight_shape`` int64 [2] = [N, K].
    Dequantization ``(q_signed − zp_signed)·s = (q − z)·s`` is the AWQ formula.
"""

from __future__ import annotations

import math

import torch

from fastawq.format.awq_gemm import pack_gemm, unpack_gemm

GEMM_NAMES = ("qweight", "qzeros", "scales")
GEMV_NAMES = ("qweight", "qzeros", "scales")
CT_NAMES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")


def pack_seq(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [R, C] (C a multiple of 8) → int32 [R, C/8]; nibble i of word j = column 8j + i."""
    r, c = codes.shape
    c8 = codes.to(torch.int64).view(r, c // 8, 8)
    shifts = torch.arange(0, 32, 4, dtype=torch.int64, device=codes.device)
    words = (c8 << shifts).sum(dim=-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_seq(words: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_seq`: int32 [R, W] → uint8 [R, 8W]."""
    r, w = words.shape
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=words.device)
    return ((words.unsqueeze(-1) >> shifts) & 0xF).to(torch.uint8).view(r, 8 * w)


# ------------------------------------------------------------------------------------------------ GEMV


def gemv_zeros_width(k: int, group_size: int) -> int:
    """W of the GEMV layout: packed zero-point words per output row."""
    align = {32: 4, 64: 2}.get(group_size, 1)
    if group_size < 32:
        raise ValueError(f"the GEMV layout is defined for group sizes ≥ 32, not {group_size}")
    words = math.ceil(k // group_size / 8)
    return math.ceil(words / align) * align


def gemm_to_gemv(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> dict[str, torch.Tensor]:
    k, n = qweight.shape[0], qweight.shape[1] * 8
    groups = scales.shape[0]
    g = k // groups
    w = gemv_zeros_width(k, g)
    zeros = torch.zeros(n, 8 * w, dtype=torch.uint8, device=qweight.device)
    zeros[:, :groups] = unpack_gemm(qzeros).t()
    padded_scales = torch.zeros(n, 8 * w, dtype=scales.dtype, device=scales.device)
    padded_scales[:, :groups] = scales.t()
    return {
        "qweight": pack_seq(unpack_gemm(qweight).t().contiguous()),
        "qzeros": pack_seq(zeros),
        "scales": padded_scales,
    }


def gemv_to_gemm(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int
) -> dict[str, torch.Tensor]:
    k = qweight.shape[1] * 8
    groups = k // group_size
    return {
        "qweight": pack_gemm(unpack_seq(qweight).t().contiguous()),
        "qzeros": pack_gemm(unpack_seq(qzeros)[:, :groups].t().contiguous()),
        "scales": scales[:, :groups].t().contiguous(),
    }


# ------------------------------------------------------------------------------------ compressed-tensors


def gemm_to_ct(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, symmetric: bool
) -> dict[str, torch.Tensor]:
    k, n = qweight.shape[0], qweight.shape[1] * 8
    out = {
        "weight_packed": pack_seq(unpack_gemm(qweight).t().contiguous()),
        "weight_scale": scales.t().contiguous(),
        "weight_shape": torch.tensor([n, k], dtype=torch.int64),
    }
    if not symmetric:
        zeros = unpack_gemm(qzeros)  # [K/G, N]
        pad = (-n) % 8
        if pad:
            filler = torch.full((zeros.shape[0], pad), 8, dtype=torch.uint8, device=zeros.device)
            zeros = torch.cat([zeros, filler], dim=1)
        out["weight_zero_point"] = pack_seq(zeros).t().contiguous()  # [ceil(N/8), K/G], packed along N
    return out


def ct_to_gemm(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n, k = (int(v) for v in tensors["weight_shape"].tolist())
    codes = unpack_seq(tensors["weight_packed"])[:, :k]  # [N, K]
    scales = tensors["weight_scale"].t().contiguous()  # [K/G, N]
    if "weight_zero_point" in tensors:
        zeros = unpack_seq(tensors["weight_zero_point"].t().contiguous())[:, :n]  # [K/G, N]
    else:
        zeros = torch.full((scales.shape[0], n), 8, dtype=torch.uint8, device=scales.device)  # symmetric
    return {
        "qweight": pack_gemm(codes.t().contiguous()),
        "qzeros": pack_gemm(zeros.contiguous()),
        "scales": scales.to(torch.float16),
    }
