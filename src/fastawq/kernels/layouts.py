"""Runtime weight layouts: how a kernel wants the 4-bit weight laid out in memory.

The checkpoint always holds the AWQ GEMM layout (:mod:`fastawq.format.awq_gemm`). A kernel may prefer
another layout; the weight is repacked into it once (at load or at the first call) and every layout
converts back to the GEMM tensors losslessly, so a repacked model saves exactly what it loaded.

Layouts:

``awq_gemm``
    The checkpoint tensors: ``qweight`` int32 [K, N/8] (AWQ nibble order across N), ``qzeros`` int32
    [K/G, N/8], ``scales`` fp16 [K/G, N]. Used by the reference kernel.
``nk_int4``
    For the Triton kernels: ``qweight_nk`` int32 [N, K/8], nibble ``j`` of word ``w`` holding the code of
    input ``k = 8w + j`` (plain order along K, so one output row streams contiguous memory);
    ``sz_gn`` int32 [K/G, N]: scale and zero point of a group in one word (low 16 bits: the fp16
    scale's bits; bits 16…23: the zero point), group-major, so one load per output row and group
    fetches both, and a tile of rows reads one contiguous run. Same bytes as ``awq_gemm`` except the
    scale/zero pairs, which take 4 bytes instead of 2.5 (about 2 % more memory at group size 128).
``nk_frag``
    For the fragment-order kernels (the default on sm_90; elsewhere ``kernel="triton_frag"``): ``qweight_frag`` int32
    [N/16, K/64, 32, 4], one 512-byte block per 16 output rows × 64 inputs, in which lane ``l`` of a
    warp finds, as one 16-byte load, exactly the codes of its tensor-core A fragments (rows l/4 and
    l/4 + 8, inputs 2(l%4) + {0, 1, 8, 9} of each of four 16-input steps); ``sz_gn`` as in ``nk_int4``.
    Word order and nibble order are spelled out in :func:`pack_frag`. Needs N % 16 == 0, K % 64 == 0
    and a group size of 32, 64, 128 or 256 (the CUDA kernels on it: 64 and up). Same bytes as ``nk_int4``.
``cpu_int4pack``
    For PyTorch's CPU int4 kernel: the opaque uint8 [N, K/2] tensor of
    ``aten._convert_weight_to_int4pack_for_cpu``, ``scale_zeros`` [K/G, N, 2] in the compute dtype with
    the float zero ``(8 - z)·s`` that kernel expects, plus the fp16 scales and uint8 zero points so the
    way back is exact. Its nibble placement is not documented, so the way back finds it by packing
    index patterns (only needed when a CPU-packed model is saved).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fastawq.format.awq_gemm import pack_gemm, unpack_gemm
from fastawq.format.conversions import pack_seq, unpack_seq

AWQ_GEMM = "awq_gemm"
NK_INT4 = "nk_int4"
NK_FRAG = "nk_frag"
CPU_INT4PACK = "cpu_int4pack"
LAYOUTS = (AWQ_GEMM, NK_INT4, NK_FRAG, CPU_INT4PACK)

#: The dtype PyTorch's CPU int4 kernel computes in (fast on x86 with or without AVX512-BF16).
CPU_COMPUTE_DTYPE = torch.bfloat16


@dataclass(frozen=True)
class GemmTensors:
    """The three AWQ GEMM tensors of one linear layer."""

    qweight: torch.Tensor  # int32 [K, N/8]
    qzeros: torch.Tensor  # int32 [K/G, N/8]
    scales: torch.Tensor  # fp16 [K/G, N]


# ---------------------------------------------------------------------------------------------- nk_int4


#: output rows repacked at a time: bounds the temporary memory of a repack (a multiple of 64)
REPACK_ROWS = 128


def pack_scale_zero(scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """fp16 scales and uint8 zero points [K/G, N] → int32 words ``zero << 16 | bits(scale)``."""
    bits = scales.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
    return (zeros.to(torch.int32) << 16) | bits


def _row_slices(t: GemmTensors) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(n0, n1, uint8 codes [n1 - n0, K]) of the GEMM weight, REPACK_ROWS output rows at a time."""
    n = t.qweight.shape[1] * 8
    for n0 in range(0, n, REPACK_ROWS):
        n1 = min(n, n0 + REPACK_ROWS)
        yield n0, n1, unpack_gemm(t.qweight[:, n0 // 8 : n1 // 8]).t().contiguous()


def _sz_of(t: GemmTensors) -> torch.Tensor:
    return pack_scale_zero(t.scales, unpack_gemm(t.qzeros))


def _gemm_from(codes_nk: torch.Tensor, sz_gn: torch.Tensor) -> GemmTensors:
    """The GEMM tensors of uint8 codes [N, K] and ``sz_gn`` words (the way back of nk_int4 and nk_frag)."""
    return GemmTensors(
        qweight=pack_gemm(codes_nk.t().contiguous()),
        qzeros=pack_gemm((sz_gn >> 16).to(torch.uint8)),
        scales=(sz_gn & 0xFFFF).to(torch.int16).view(torch.float16),
    )


def gemm_to_nk(t: GemmTensors) -> dict[str, torch.Tensor]:
    k, n = t.qweight.shape[0], t.qweight.shape[1] * 8
    qweight = torch.empty(n, k // 8, dtype=torch.int32, device=t.qweight.device)
    for n0, n1, codes in _row_slices(t):
        qweight[n0:n1] = pack_seq(codes)  # packed along K like GEMV / compressed-tensors
    return {"qweight_nk": qweight, "sz_gn": _sz_of(t)}


def nk_to_gemm(d: dict[str, torch.Tensor]) -> GemmTensors:
    return _gemm_from(unpack_seq(d["qweight_nk"]), d["sz_gn"])


# ---------------------------------------------------------------------------------------------- nk_frag

#: nibble of a word that holds fragment value v (a0…a7 of mma.m16n8k16's A operand): value pair i
#: (a2i, a2i+1) sits in nibbles i and i + 4, so one shift and one lop3 extract a pair into two fp16 lanes
FRAG_NIBBLE = (0, 4, 1, 5, 2, 6, 3, 7)
FRAG_GROUP_SIZES = (32, 64, 128, 256)


def frag_supported(k: int, n: int, group_size: int) -> str | None:
    """Why the ``nk_frag`` layout cannot hold a [K, N] weight (None: it can)."""
    if n % 16 or k % 64:
        return f"the fragment layout needs out_features % 16 == 0 and in_features % 64 == 0, got {k}→{n}"
    if group_size not in FRAG_GROUP_SIZES:
        return f"the fragment layout takes group sizes {FRAG_GROUP_SIZES}, not {group_size}"
    return None


def pack_frag(codes_nk: torch.Tensor) -> torch.Tensor:
    """uint8 codes [N, K] → int32 [N/16, K/64, 32, 4] in tensor-core fragment order.

    Block (b, c) covers rows 16b…16b+15 and inputs 64c…64c+63. Word j of lane l (l = 4g + t) holds,
    for the 16-input step j, the codes of row 16b + g + 8·v1 at input 64c + 16j + 2t + 8·v2 + v0 for
    fragment value v = 4·v2 + 2·v1 + v0, in nibble ``FRAG_NIBBLE[v]``.
    """
    n, k = codes_nk.shape
    q = codes_nk.to(torch.int32).view(n // 16, 2, 8, k // 64, 4, 2, 4, 2)  # b v1 g c j v2 t v0
    q = q.permute(0, 3, 2, 6, 4, 5, 1, 7).reshape(n // 16, k // 64, 32, 4, 8)  # b c (g t) j (v2 v1 v0)
    shifts = torch.tensor([4 * p for p in FRAG_NIBBLE], dtype=torch.int32, device=q.device)
    return (q << shifts).sum(-1, dtype=torch.int32)  # the top nibble's bit 31 wraps to the sign: exact


def unpack_frag(words: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_frag`: int32 [N/16, K/64, 32, 4] → uint8 codes [N, K]."""
    nb, kc = words.shape[0], words.shape[1]
    shifts = torch.tensor([4 * p for p in FRAG_NIBBLE], dtype=torch.int32, device=words.device)
    q = (words[..., None] >> shifts) & 0xF  # b c (g t) j v
    q = q.view(nb, kc, 8, 4, 4, 2, 2, 2).permute(0, 6, 2, 1, 4, 5, 3, 7)  # b v1 g c j v2 t v0
    return q.reshape(nb * 16, kc * 64).to(torch.uint8)


def gemm_to_frag(t: GemmTensors) -> dict[str, torch.Tensor]:
    k, n = t.qweight.shape[0], t.qweight.shape[1] * 8
    words = torch.empty(n // 16, k // 64, 32, 4, dtype=torch.int32, device=t.qweight.device)
    for n0, n1, codes in _row_slices(t):  # REPACK_ROWS is a multiple of 16
        words[n0 // 16 : n1 // 16] = pack_frag(codes)
    return {"qweight_frag": words, "sz_gn": _sz_of(t)}


def frag_to_gemm(d: dict[str, torch.Tensor]) -> GemmTensors:
    return _gemm_from(unpack_frag(d["qweight_frag"]), d["sz_gn"])


# ----------------------------------------------------------------------------------------- cpu_int4pack


def cpu_int4pack_available() -> bool:
    return hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu") and hasattr(
        torch.ops.aten, "_weight_int4pack_mm_for_cpu"
    )


def cpu_scale_zeros(scales: torch.Tensor, zeros: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[K/G, N, 2] (scale, (8 - z)·scale): the CPU kernel computes ``(q - 8)·scale + zero``."""
    s = scales.to(torch.float32)
    zf = (8.0 - zeros.to(torch.float32)) * s
    return torch.stack([s, zf], dim=-1).to(dtype).contiguous()


def gemm_to_cpu(t: GemmTensors, dtype: torch.dtype = CPU_COMPUTE_DTYPE) -> dict[str, torch.Tensor]:
    k, n = t.qweight.shape[0], t.qweight.shape[1] * 8
    packed = torch.empty(n, k // 2, dtype=torch.uint8)
    # the kernel's packing is independent per block of 64 output rows, so it can go a slice at a time
    for n0, n1, codes in _row_slices(t):
        packed[n0:n1] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), 1)
    zeros = unpack_gemm(t.qzeros)  # [K/G, N] uint8
    return {
        "weight_int4pack": packed,
        "scale_zeros": cpu_scale_zeros(t.scales, zeros, dtype),
        "scales_kn": t.scales.contiguous(),
        "zeros_kn": zeros,
    }


@functools.lru_cache(maxsize=16)
def _int4pack_positions(n: int, k: int) -> torch.Tensor:
    """For every nibble of the packed [n, K/2] tensor, the flat index ``row·K + k`` of the code it holds."""
    idx = torch.arange(n * k, dtype=torch.int64).view(n, k)
    bits = max(1, (n * k - 1).bit_length())
    lo = torch.zeros(n, k // 2, dtype=torch.int64)
    hi = torch.zeros(n, k // 2, dtype=torch.int64)
    for b in range(0, bits, 4):
        probe = ((idx >> b) & 0xF).to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1).to(torch.int64)
        lo |= (packed & 0xF) << b
        hi |= ((packed >> 4) & 0xF) << b
    return torch.stack([lo, hi], dim=-1).view(-1)


#: the CPU kernel packs each block of this many output rows on its own (checked by the tests)
CPU_PACK_BLOCK = 64


def cpu_to_gemm(d: dict[str, torch.Tensor]) -> GemmTensors:
    packed = d["weight_int4pack"].cpu()
    n, half_k = packed.shape
    k = half_k * 2
    codes = torch.empty(n, k, dtype=torch.uint8)
    for n0 in range(0, n, CPU_PACK_BLOCK):  # one block at a time: the index pattern is per block
        n1 = min(n, n0 + CPU_PACK_BLOCK)
        block = packed[n0:n1]
        nibbles = torch.stack([block & 0xF, (block >> 4) & 0xF], dim=-1).view(-1)
        out = torch.empty((n1 - n0) * k, dtype=torch.uint8)
        out[_int4pack_positions(n1 - n0, k)] = nibbles
        codes[n0:n1] = out.view(n1 - n0, k)
    dev = d["scales_kn"].device
    return GemmTensors(
        qweight=pack_gemm(codes.t().contiguous()).to(dev),
        qzeros=pack_gemm(d["zeros_kn"]),
        scales=d["scales_kn"],
    )


# --------------------------------------------------------------------------------------------- dispatch


def why_not_layout(layout: str, k: int, n: int, group_size: int) -> str | None:
    """Why ``layout`` cannot hold a [K, N] weight with this group size (None: it can)."""
    if layout == NK_FRAG:
        return frag_supported(k, n, group_size)
    if layout == CPU_INT4PACK and (n % 16 or group_size not in (32, 64, 128, 256)):
        return f"the CPU int4 layout needs out_features % 16 == 0 and group size 32/64/128/256, got {n}, {group_size}"
    return None


def to_layout(t: GemmTensors, layout: str) -> dict[str, torch.Tensor]:
    """The tensors of ``layout`` for the GEMM tensors ``t`` (on t's device)."""
    if layout == AWQ_GEMM:
        return {"qweight": t.qweight, "qzeros": t.qzeros, "scales": t.scales}
    if layout == NK_INT4:
        return gemm_to_nk(t)
    if layout == NK_FRAG:
        return gemm_to_frag(t)
    if layout == CPU_INT4PACK:
        return gemm_to_cpu(t)
    raise ValueError(f"unknown layout {layout!r}")


def from_layout(d: dict[str, torch.Tensor], layout: str) -> GemmTensors:
    """The GEMM tensors back from ``layout``'s tensors: exact for every layout."""
    if layout == AWQ_GEMM:
        return GemmTensors(d["qweight"], d["qzeros"], d["scales"])
    if layout == NK_INT4:
        return nk_to_gemm(d)
    if layout == NK_FRAG:
        return frag_to_gemm(d)
    if layout == CPU_INT4PACK:
        return cpu_to_gemm(d)
    raise ValueError(f"unknown layout {layout!r}")
