"""The AWQ GEMM layout (``quant_method: awq``, ``version: gemm``).

For a linear layer y = x Wᵀ with W of shape [N, K] (out, in) and group size G:

* ``qweight`` int32 [K, N/8]: k-major. Word [k, j] holds the 4-bit codes of output columns
  8j … 8j+7 of input row k; nibble i (bits 4i … 4i+3) holds column ``8j + AWQ_ORDER[i]``.
* ``qzeros`` int32 [K/G, N/8]: the raw zero points (0 … 15), packed like ``qweight``.
* ``scales`` float16 [K/G, N].

Dequantization: ``W[n, k] = (q[k, n] - z[k // G, n]) * s[k // G, n]``.
"""

from __future__ import annotations

import torch

#: nibble i of a packed word holds column 8j + AWQ_ORDER[i]
AWQ_ORDER: tuple[int, ...] = (0, 2, 4, 6, 1, 3, 5, 7)
#: column c (mod 8) of a group of eight lies in nibble AWQ_REVERSE_ORDER[c]
AWQ_REVERSE_ORDER: tuple[int, ...] = (0, 4, 1, 5, 2, 6, 3, 7)

_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int64)  # used by pack_gemm


def pack_gemm(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes laid out [rows, cols] (cols a multiple of 8) into int32 [rows, cols/8].

    ``codes`` is indexed the way the format is: rows are input channels (or groups for zero
    points), columns are output channels. Values must lie in 0 … 15.
    """
    if codes.dim() != 2 or codes.shape[1] % 8:
        raise ValueError(f"pack_gemm needs a 2-D tensor with a multiple of 8 columns, got {tuple(codes.shape)}")
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) > 15):
        raise ValueError("pack_gemm: codes outside 0..15")
    rows, cols = c.shape
    # [rows, cols/8, 8] with the last axis put in nibble order
    grouped = c.view(rows, cols // 8, 8)[:, :, list(AWQ_ORDER)]
    words = (grouped << _SHIFTS.to(c.device)).sum(dim=-1)
    # reinterpret the unsigned 32-bit pattern as int32
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)


def unpack_gemm(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_gemm`: int32 [rows, W] → uint8 codes [rows, 8W] in column order."""
    if packed.dtype != torch.int32 or packed.dim() != 2:
        raise ValueError(f"unpack_gemm needs a 2-D int32 tensor, got {packed.dtype} {tuple(packed.shape)}")
    rows, words = packed.shape
    out = torch.empty(rows, words, 8, dtype=torch.uint8, device=packed.device)
    for nibble, column in enumerate(AWQ_ORDER):
        # one [rows, W] temporary at a time; the mask makes the arithmetic shift harmless
        out[:, :, column] = ((packed >> (4 * nibble)) & 0xF).to(torch.uint8)
    return out.view(rows, words * 8)


def dequantize_gemm(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Full-precision weight [K, N] (k-major, i.e. ``W.T``) from the three GEMM tensors."""
    dtype = dtype or scales.dtype
    q = unpack_gemm(qweight)  # [K, N]
    z = unpack_gemm(qzeros)  # [K/G, N]
    k, n = q.shape
    groups = k // group_size
    w = q.view(groups, group_size, n).to(dtype)
    w -= z.view(groups, 1, n).to(dtype)
    w *= scales.view(groups, 1, n).to(dtype)
    return w.view(k, n)
