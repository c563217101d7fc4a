"""Triton kernels on the ``nk_frag`` layout: the weight pre-permuted to the tensor cores' A fragments.

In ``nk_frag`` (see :mod:`.layouts`) one 16-byte load gives a lane exactly the codes of its
``mma.m16n8k16`` A fragments for four 16-input steps, so the decoded tile reaches the MMA without a
pass through shared memory: Triton lays the loaded words out as [row blocks, chunks, 32 lanes, 4] and a
reshape + permute of the decoded values *is* the dot operand's register layout (checked in the
compiled code: no layout conversion in the loop). Against ``nk_int4``'s tensor-core kernel this is
1.1–1.45× faster at 4 ≤ M ≤ 128 on an H100; at M = 1 the packed-pair GEMV on ``nk_int4`` stays about 6 %
ahead on three of five shapes (BENCHMARKS.md). This layout is the default on sm_90 (``dispatch``), and can be
forced elsewhere with ``kernel="triton_frag"``.

``frag_mma``
    Tensor cores with the operands swapped (W·xᵀ, x padded to ≥ 16 rows), one group of K per step,
    each group's zero point subtracted in the decode and its scale applied to the fp32 result.
``frag_gemv``
    M = 1 on CUDA cores: one block of 16 rows per program, its warps on consecutive runs of 64 – 256
    inputs, summed across warps once at the end (no atomics unless K is also split over programs).
``frag_dequant_matmul``
    Prefill-sized M: dequantize to a dense weight, then cuBLAS.
``frag_auto``
    The tuner's choice for this shape and M (timed on the first call) among the three and the CUDA
    kernels on the same layout: :mod:`.cuda_gemv` (x-stationary decode, up to 16 rows), :mod:`.cuda_frag`
    (``mma.sync``, up to 64 rows) and, on sm_90 from 9
    rows, the warp-specialized :mod:`.cuda_ws` (TMA + ``wgmma``), which wins most shapes from 16 rows.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from fastawq.kernels import cuda_frag, cuda_gemv, cuda_ws, layouts
from fastawq.kernels.triton_awq import (
    _PLANS,
    TUNE_LOG,
    Candidate,
    Launch,
    Plan,
    TileConfig,
    Tuner,
    _bucket,
    _code,
    _dot_asm,
    _emu_pair,
    _finish,
    _half_value,
    _plan,
    _planned,
    _scale,
    _store_nm,
    _x_scaled,
    interpreting,
)


def _frag_asm(f16: bool, halves: bool) -> str:
    """Decode of one ``nk_frag`` word into its eight (q − z) values.

    Pair i of the word is nibbles (i, i + 4): one shift and one ``lop3`` put them into the two 16-bit
    lanes under the magic exponent (1024 + q in fp16, 128 + q in bf16, both exact) and one ``fma``
    adds the pair −(magic + z) of the pair's row (pairs 0 and 2: row g; pairs 1 and 3: row g + 8).
    ``halves``: outputs $0…$7 are the eight 16-bit values (the MMA's operand), input $8 the word and
    $9 / $10 the two rows' z pairs; else outputs $0…$3 are the four pairs (the GEMV), $4 the word and
    $5 / $6 the z pairs.
    """
    magic, one, ty = ("0x64006400", "0x3C003C00", "f16x2") if f16 else ("0x43004300", "0x3F803F80", "bf16x2")
    word, zlo, zhi = ("$8", "$9", "$10") if halves else ("$4", "$5", "$6")
    body = [".reg .b32 t, p, one;", f"mov.b32 one, {one};"]
    for i in range(4):
        src = word
        if i:
            body.append(f"shr.b32 t, {word}, {4 * i};")
            src = "t"
        dst = "p" if halves else f"${i}"
        body += [
            f"lop3.b32 {dst}, {src}, 0x000f000f, {magic}, 0xea;",
            f"fma.rn.{ty} {dst}, {dst}, one, {zlo if i % 2 == 0 else zhi};",
        ]
        if halves:
            body.append(f"mov.b32 {{${2 * i}, ${2 * i + 1}}}, p;")
    return "{\n" + "\n".join(body) + "\n}"


_ASM_FRAG_F16: tl.constexpr = tl.constexpr(_frag_asm(f16=True, halves=True))
_ASM_FRAG_BF16: tl.constexpr = tl.constexpr(_frag_asm(f16=False, halves=True))
_ASM_FPAIRS_F16: tl.constexpr = tl.constexpr(_frag_asm(f16=True, halves=False))
_ASM_FPAIRS_BF16: tl.constexpr = tl.constexpr(_frag_asm(f16=False, halves=False))
# Σ of two pairs' products (rows g or g + 8 of a word: pairs 0·xa + 2·xb, or 1·xa + 3·xb) in fp32
_ASM_DOT2_F16: tl.constexpr = tl.constexpr(_dot_asm(f16=True, pairs=2))
_ASM_DOT2_BF16: tl.constexpr = tl.constexpr(_dot_asm(f16=False, pairs=2))


@triton.jit
def _zpair(z, DT: tl.constexpr):
    """The pair −(magic + z) of int32 zero points (the fma in the decode subtracts it)."""
    magic = 0x6400 if tl.float16 == DT else 0x4300
    return ((magic + z) | 0x8000) * 0x10001


@triton.jit
def _fv(wd, v: tl.constexpr, z, DT: tl.constexpr):
    """Interpreter: fragment value v of ``wd`` minus z, in DT."""
    nib: tl.constexpr = (v // 2) + 4 * (v % 2)
    return (((wd >> (4 * nib)) & 0xF).to(tl.float32) - z.to(tl.float32)).to(DT)


@triton.jit
def _frag_values(wd, zlo, zhi, DT: tl.constexpr, ASM: tl.constexpr):
    """(q − z) of each word's eight fragment values a0…a7, as [..., 2, 2, 2] with a_v at
    [..., v % 2, v // 2 % 2, v // 4] (``tl.join`` appends the outermost join last)."""
    if ASM:
        if tl.float16 == DT:
            a0, a1, a2, a3, a4, a5, a6, a7 = tl.inline_asm_elementwise(
                _ASM_FRAG_F16, "=h,=h,=h,=h,=h,=h,=h,=h,r,r,r", [wd, _zpair(zlo, DT), _zpair(zhi, DT)],
                (tl.float16, tl.float16, tl.float16, tl.float16, tl.float16, tl.float16, tl.float16, tl.float16),
                True, 1,
            )  # fmt: skip
        else:
            a0, a1, a2, a3, a4, a5, a6, a7 = tl.inline_asm_elementwise(
                _ASM_FRAG_BF16, "=h,=h,=h,=h,=h,=h,=h,=h,r,r,r", [wd, _zpair(zlo, DT), _zpair(zhi, DT)],
                (tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16,
                 tl.bfloat16),
                True, 1,
            )  # fmt: skip
    else:
        a0 = _fv(wd, 0, zlo, DT)
        a1 = _fv(wd, 1, zlo, DT)
        a2 = _fv(wd, 2, zhi, DT)
        a3 = _fv(wd, 3, zhi, DT)
        a4 = _fv(wd, 4, zlo, DT)
        a5 = _fv(wd, 5, zlo, DT)
        a6 = _fv(wd, 6, zhi, DT)
        a7 = _fv(wd, 7, zhi, DT)
    return tl.join(tl.join(tl.join(a0, a1), tl.join(a2, a3)), tl.join(tl.join(a4, a5), tl.join(a6, a7)))


@triton.jit
def _frag_tile(qw_ptr, sz_ptr, pid_n, u, N, K, G: tl.constexpr, BN: tl.constexpr, DT: tl.constexpr,
               ASM: tl.constexpr):  # fmt: skip
    """The (q − z) tile [BN, U] of row block ``pid_n`` and unit u, in the MMA's A-operand order. A unit is
    one group (U = G) from 64 inputs up; at G = 32 it is 64 inputs, two groups (U = 64: its inputs 0 … 31
    are group 2u, in words 0 and 1 of each lane; 32 … 63 group 2u + 1, in words 2 and 3)."""
    U: tl.constexpr = G if G >= 64 else 64
    W: tl.constexpr = BN // 16
    C: tl.constexpr = U // 64
    nb = pid_n * W + tl.arange(0, W)
    lane = tl.arange(0, 32)
    chunk = u * C + tl.arange(0, C)
    words = ((nb[:, None, None, None] * (K // 64) + chunk[None, :, None, None]) * 32
             + lane[None, None, :, None]) * 4 + tl.arange(0, 4)[None, None, None, :]  # fmt: skip
    ok = nb < N // 16
    wd = tl.load(qw_ptr + words, mask=ok[:, None, None, None], other=0)  # [W, C, 32, 4]
    rows = nb[:, None] * 16 + (lane // 4)[None, :]  # row g of each lane's fragments
    if G >= 64:
        zlo = ((tl.load(sz_ptr + u * N + rows, mask=ok[:, None], other=0) >> 16) & 0xFF)[:, None, :, None]
        zhi = ((tl.load(sz_ptr + u * N + rows + 8, mask=ok[:, None], other=0) >> 16) & 0xFF)[:, None, :, None]
    else:  # each word's group, as in the GEMV: words 0, 1 in group 2u, words 2, 3 in 2u + 1 ([W, 1, 32, 4])
        at = sz_ptr + (2 * u + tl.arange(0, 4) // 2)[None, None, None, :] * N + rows[:, None, :, None]
        zlo = (tl.load(at, mask=ok[:, None, None, None], other=0) >> 16) & 0xFF
        zhi = (tl.load(at + 8, mask=ok[:, None, None, None], other=0) >> 16) & 0xFF
    a = _frag_values(wd, zlo, zhi, DT, ASM)
    a = tl.reshape(a, (W, C, 8, 4, 4, 2, 2, 2))  # block, chunk, g, t, j, v0, v1, v2
    a = tl.permute(a, (0, 6, 2, 1, 4, 7, 3, 5))  # row = 16·block + 8·v1 + g; k = 64·chunk + 16j + 8·v2 + 2t + v0
    return tl.reshape(a, (BN, U))


@triton.jit
def _dot_t(a, x, UPCAST: tl.constexpr):
    """a·xᵀ in fp32."""
    if UPCAST:  # the interpreter's bf16 dot is wrong (triton 3.9); q − z and x are exact in fp32
        return tl.dot(a.to(tl.float32), tl.trans(x.to(tl.float32)), input_precision="ieee")
    else:
        return tl.dot(a, tl.trans(x))


@triton.jit
def _frag_mma_kernel(
    x_ptr, qw_ptr, sz_ptr, b_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, stride_xm, stride_ym, units_per_split,
    G: tl.constexpr, HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
    ATOMIC: tl.constexpr, ASM: tl.constexpr, UPCAST: tl.constexpr, WS: tl.constexpr,
):  # fmt: skip
    """acc[BN, BM] = W·xᵀ over one slice of K (split-K: see ``triton_awq._finish``), a unit of
    :func:`_frag_tile` (one group, or two at G = 32) a step."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_m = pid_m * BM + tl.arange(0, BM)
    mask_n = offs_n < N
    mask_m = offs_m < M
    U: tl.constexpr = G if G >= 64 else 64
    offs_k = tl.arange(0, U)
    u_lo = pid_k * units_per_split
    acc = tl.zeros((BN, BM), dtype=tl.float32)
    for u in range(u_lo, u_lo + units_per_split):
        a = _frag_tile(qw_ptr, sz_ptr, pid_n, u, N, K, G, BN, x_ptr.dtype.element_ty, ASM)
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (u * U + offs_k)[None, :], mask=mask_m[:, None], other=0.0)
        if G >= 64:
            s = _scale(tl.load(sz_ptr + u * N + offs_n, mask=mask_n, other=0))
            acc += s[:, None] * _dot_t(a, x, UPCAST)
        else:  # two groups: the tile is dequantized, (q − z)·s rounded once, and multiplied as one
            # (splitting it into two 32-input products shuffled it between layouts: 1.2 – 1.4× slower on an H200)
            s0 = _scale(tl.load(sz_ptr + 2 * u * N + offs_n, mask=mask_n, other=0))
            s1 = _scale(tl.load(sz_ptr + (2 * u + 1) * N + offs_n, mask=mask_n, other=0))
            s = tl.where((offs_k < 32)[None, :], s0[:, None], s1[:, None])
            acc += _dot_t((a.to(tl.float32) * s).to(x_ptr.dtype.element_ty), x, UPCAST)
    _store_nm(
        acc, b_ptr, y_ptr, ws_ptr, cnt_ptr, offs_n, offs_m, mask_n, mask_m, N, stride_ym, pid_k, HAS_BIAS, ATOMIC, WS
    )


@triton.jit
def _fpairs(wd, zlo, zhi, DT: tl.constexpr, ASM: tl.constexpr):
    """The four (q − z) pairs of each word: rows g (pairs 0, 2) and g + 8 (pairs 1, 3)."""
    if ASM:
        zl = _zpair(zlo, DT)
        zh = _zpair(zhi, DT)
        if tl.float16 == DT:
            return tl.inline_asm_elementwise(_ASM_FPAIRS_F16, "=r,=r,=r,=r,r,r,r", [wd, zl, zh],
                                             (tl.int32, tl.int32, tl.int32, tl.int32), True, 1)  # fmt: skip
        else:
            return tl.inline_asm_elementwise(_ASM_FPAIRS_BF16, "=r,=r,=r,=r,r,r,r", [wd, zl, zh],
                                             (tl.int32, tl.int32, tl.int32, tl.int32), True, 1)  # fmt: skip
    else:
        zl = zlo.to(tl.float32)
        zh = zhi.to(tl.float32)
        p0 = _emu_pair(_code(wd, 0) - zl, _code(wd, 4) - zl, DT)
        p1 = _emu_pair(_code(wd, 1) - zh, _code(wd, 5) - zh, DT)
        p2 = _emu_pair(_code(wd, 2) - zl, _code(wd, 6) - zl, DT)
        p3 = _emu_pair(_code(wd, 3) - zh, _code(wd, 7) - zh, DT)
        return p0, p1, p2, p3


@triton.jit
def _dot2(pa, pb, xa, xb, DT: tl.constexpr, ASM: tl.constexpr):
    """fp32 Σ of the four products of pairs pa·xa + pb·xb."""
    if ASM:
        if tl.float16 == DT:
            return tl.inline_asm_elementwise(_ASM_DOT2_F16, "=r,r,r,r,r", [pa, pb, xa, xb], tl.float32, True, 1)
        else:
            return tl.inline_asm_elementwise(_ASM_DOT2_BF16, "=r,r,r,r,r", [pa, pb, xa, xb], tl.float32, True, 1)
    else:
        d = _half_value(pa, DT) * _half_value(xa, DT) + _half_value(pa >> 16, DT) * _half_value(xa >> 16, DT)
        d += _half_value(pb, DT) * _half_value(xb, DT) + _half_value(pb >> 16, DT) * _half_value(xb >> 16, DT)
        return d


@triton.jit
def _frag_gemv_kernel(
    x_ptr, qw_ptr, sz_ptr, b_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, stride_xm, stride_ym, steps_per_split,
    G: tl.constexpr, HAS_BIAS: tl.constexpr, KW: tl.constexpr, CW: tl.constexpr, ATOMIC: tl.constexpr,
    ASM: tl.constexpr, PF: tl.constexpr, WS: tl.constexpr,
):  # fmt: skip
    """y[row, 16 rows of block pid_n] over one slice of K; warp kw takes the CW chunks of 64 inputs
    KW·CW·step + CW·kw + (0 … CW − 1).

    Each word's pairs are multiplied by the matching x pairs (fp16: pre-scaled by 1/64, scaled back in
    fp32 with the group's scale): rows g and g + 8 of the lane each get two f16x2/bf16x2 products
    per word, summed to fp32. PF: the next step's words are loaded before this one is computed.
    """
    DT: tl.constexpr = x_ptr.dtype.element_ty
    XS: tl.constexpr = 64.0 if tl.float16 == DT else 1.0
    nb = tl.program_id(0)
    row = tl.program_id(1)
    pid_k = tl.program_id(2)
    lane = tl.arange(0, 32)
    kk = tl.arange(0, KW)
    cc = tl.arange(0, CW)
    # words [CW, KW, 32, 4]: 16 bytes per lane, lanes along the block, warps over the step's chunks
    words = ((nb * (K // 64) + kk[None, :, None, None] * CW + cc[:, None, None, None]) * 32
             + lane[None, None, :, None]) * 4 + tl.arange(0, 4)[None, None, None, :]  # fmt: skip
    rows = (nb * 16 + lane // 4)[None, None, :, None]
    x_row = x_ptr.to(tl.pointer_type(tl.int32)) + row * (stride_xm // 2)
    acc_lo = tl.zeros((CW, KW, 32, 4), dtype=tl.float32)
    acc_hi = tl.zeros((CW, KW, 32, 4), dtype=tl.float32)
    step_words = KW * CW * 128
    s_lo = pid_k * steps_per_split
    s_last = s_lo + steps_per_split - 1
    if PF:
        wd_next = tl.load(qw_ptr + words + s_lo * step_words)
    for st in range(s_lo, s_lo + steps_per_split):
        if PF:
            wd = wd_next
            wd_next = tl.load(qw_ptr + words + tl.minimum(st + 1, s_last) * step_words)
        else:
            wd = tl.load(qw_ptr + words + st * step_words)
        chunk = st * KW * CW + kk[None, :, None, None] * CW + cc[:, None, None, None]  # [CW, KW, 1, 1]
        if G >= 64:
            grp = chunk // (G // 64)
        else:  # G = 32: words 0, 1 of a chunk in one group, 2, 3 in the next ([CW, KW, 1, 4])
            grp = chunk * 2 + (tl.arange(0, 4) // 2)[None, None, None, :]
        sz_lo = tl.load(sz_ptr + grp * N + rows)  # [CW, KW, 32, 1 or 4]
        sz_hi = tl.load(sz_ptr + grp * N + rows + 8)
        zlo = tl.broadcast_to((sz_lo >> 16) & 0xFF, (CW, KW, 32, 4))
        zhi = tl.broadcast_to((sz_hi >> 16) & 0xFF, (CW, KW, 32, 4))
        p0, p1, p2, p3 = _fpairs(wd, zlo, zhi, DT, ASM)
        # the step's x pairs in one contiguous load (index (kw·CW + c)·32 + 8j + 4·b + t for the pair
        # xa (b = 0) or xb (b = 1) of step j of lane t), spread over the lanes by reshapes
        xv = _x_scaled(tl.load(x_row + st * (KW * CW * 32) + tl.arange(0, KW * CW * 32)), DT, ASM)
        xv = tl.permute(tl.reshape(xv, (KW, CW, 1, 4, 2, 4)), (1, 0, 2, 5, 3, 4))  # c kw g t j b
        xv = tl.reshape(tl.broadcast_to(xv, (CW, KW, 8, 4, 4, 2)), (CW, KW, 32, 4, 2))
        xa, xb = tl.split(xv)
        acc_lo += _dot2(p0, p2, xa, xb, DT, ASM) * (_scale(sz_lo) * XS)
        acc_hi += _dot2(p1, p3, xa, xb, DT, ASM) * (_scale(sz_hi) * XS)
    r_lo = tl.sum(tl.sum(tl.sum(tl.sum(tl.reshape(acc_lo, (CW, KW, 8, 4, 4)), axis=4), axis=3), axis=1), axis=0)
    r_hi = tl.sum(tl.sum(tl.sum(tl.sum(tl.reshape(acc_hi, (CW, KW, 8, 4, 4)), axis=4), axis=3), axis=1), axis=0)
    r = tl.reshape(tl.permute(tl.join(r_lo, r_hi), (1, 0)), (16,))  # rows g, then g + 8
    offs_n = nb * 16 + tl.arange(0, 16)
    if HAS_BIAS:
        r += tl.load(b_ptr + offs_n, mask=(offs_n * 0 + pid_k) == 0, other=0.0).to(tl.float32)
    _finish(r, y_ptr + row * stride_ym + offs_n, ws_ptr + row * N + offs_n, offs_n < N, cnt_ptr, ATOMIC, WS)


@triton.jit
def _frag_dequant_kernel(qw_ptr, sz_ptr, w_ptr, N, K, G: tl.constexpr, BN: tl.constexpr, NG: tl.constexpr,
                         ASM: tl.constexpr):  # fmt: skip
    """Rows of block ``pid_n``, NG units of :func:`_frag_tile` from unit ``pid_k·NG``, into the dense [N, K]
    weight."""
    U: tl.constexpr = G if G >= 64 else 64
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    for i in tl.static_range(NG):
        u = pid_k * NG + i
        a = _frag_tile(qw_ptr, sz_ptr, pid_n, u, N, K, G, BN, w_ptr.dtype.element_ty, ASM)
        if G >= 64:
            s = _scale(tl.load(sz_ptr + u * N + offs_n, mask=mask_n, other=0))[:, None]
        else:  # inputs 0 … 31 of the unit in group 2u, 32 … 63 in 2u + 1
            s0 = _scale(tl.load(sz_ptr + 2 * u * N + offs_n, mask=mask_n, other=0))
            s1 = _scale(tl.load(sz_ptr + (2 * u + 1) * N + offs_n, mask=mask_n, other=0))
            s = tl.where((tl.arange(0, U) < 32)[None, :], s0[:, None], s1[:, None])
        w = a.to(tl.float32) * s
        offs_k = u * U + tl.arange(0, U)
        tl.store(w_ptr + offs_n[:, None] * K + offs_k[None, :], w.to(w_ptr.dtype.element_ty), mask=mask_n[:, None])


# ------------------------------------------------------------------------------------------- launchers


def _check(x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int) -> tuple[int, int, int]:
    k = w["qweight_frag"].shape[1] * 64
    n = w["sz_gn"].shape[1]
    if x2d.shape[1] != k:
        raise ValueError(f"input has {x2d.shape[1]} features, the layer expects {k}")
    reason = layouts.frag_supported(k, n, group_size)
    if reason is not None:
        raise ValueError(reason)
    return x2d.shape[0], n, k


def _asm() -> bool:
    return not interpreting()


def _unit(g: int) -> int:
    """Inputs a step of the MMA and dequantize kernels: a group, or two at group size 32."""
    return max(g, 64)


def plan_frag_mma(m: int, n: int, k: int, g: int, dtype: torch.dtype, has_bias: bool, cfg: TileConfig) -> Plan:
    """cfg: bm (≥ 16), bn (16 × warps, or a multiple), num_warps, num_stages, split (K slices)."""
    key = ("frag_mma", m, n, k, g, dtype, has_bias, cfg)
    if (p := _PLANS.get(key)) is not None:
        return p
    ku = k // _unit(g)
    split = max(1, min(cfg.split, ku))
    while ku % split:
        split -= 1
    return _plan(
        key, _frag_mma_kernel, (triton.cdiv(n, cfg.bn), triton.cdiv(m, cfg.bm), split), (ku // split,),
        cfg.num_warps, cfg.num_stages, split > 1, False, weight="qweight_frag", G=g, HAS_BIAS=has_bias,
        BM=cfg.bm, BN=cfg.bn, ATOMIC=split > 1, ASM=_asm(), UPCAST=dtype == torch.bfloat16 and interpreting(),
    )  # fmt: skip


def plan_frag_gemv(m: int, n: int, k: int, g: int, dtype: torch.dtype, has_bias: bool, cfg: TileConfig) -> Plan:
    """cfg: num_warps (warps a program, each on ``bk`` inputs a step), split (K slices), num_stages,
    prefetch."""
    key = ("frag_gemv", m, n, k, g, dtype, has_bias, cfg)
    if (p := _PLANS.get(key)) is not None:
        return p
    kw, cw = cfg.num_warps, max(1, cfg.bk // 64)
    while (k // 64) % (kw * cw):
        kw, cw = (kw // 2, cw) if kw > 1 else (kw, cw // 2)
    steps = k // 64 // (kw * cw)
    split = max(1, min(cfg.split, steps))
    while steps % split:
        split -= 1
    return _plan(
        key, _frag_gemv_kernel, (n // 16, m, split), (steps // split,), kw, cfg.num_stages, split > 1, True,
        weight="qweight_frag", G=g, HAS_BIAS=has_bias, KW=kw, CW=cw, ATOMIC=split > 1, ASM=_asm(), PF=cfg.prefetch > 0,
    )  # fmt: skip


def frag_mma(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: TileConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    return _planned(plan_frag_mma, mma_default, _check, x2d, w, group_size, bias, config)


def frag_gemv(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: TileConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    return _planned(plan_frag_gemv, _gemv_default, _check, x2d, w, group_size, bias, config)


def frag_dequantize(
    w: dict[str, torch.Tensor], group_size: int, dtype: torch.dtype, bn: int = 64, groups: int = 1, num_warps: int = 4
) -> torch.Tensor:
    """The full weight [N, K] in ``dtype`` (nn.Linear orientation); ``groups`` steps (a group each, two at
    group size 32) per program along K."""
    n = w["sz_gn"].shape[1]
    k = w["qweight_frag"].shape[1] * 64
    units = k // _unit(group_size)
    while units % groups:
        groups //= 2
    out = torch.empty(n, k, device=w["sz_gn"].device, dtype=dtype)
    grid = (triton.cdiv(n, bn), units // groups)
    _frag_dequant_kernel[grid](w["qweight_frag"], w["sz_gn"], out, n, k, G=group_size, BN=bn, NG=groups,
                               ASM=_asm(), num_warps=num_warps)  # fmt: skip
    return out


def frag_dequant_matmul(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: TileConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    _check(x2d, w, group_size)
    weight = frag_dequantize(w, group_size, x2d.dtype)
    return torch.nn.functional.linear(x2d, weight, bias.to(x2d.dtype) if bias is not None else None)


# ---------------------------------------------------------------------------------------------- tuning


def _gemv_default(m: int, n: int, k: int, g: int) -> TileConfig:
    return TileConfig(1, 16, 128, 2, 1, split=4)  # within 13 % of the best on the five H100 sweep shapes


def mma_default(m: int, n: int, k: int, g: int) -> TileConfig:
    """The untuned MMA config (also the decode kernel's unsplit stand-in inside a graph capture at group size 32)."""
    return TileConfig(min(128, max(16, _bucket(m))), 64, g, 4, 3, split=4 if m <= 64 else 2)


def candidates(m: int, n: int, k: int, group_size: int, dtype: torch.dtype = torch.float16) -> list[Candidate]:
    """What the tuner times (the fastest configs of the H100 fragment-layout sweeps in BENCHMARKS.md)."""
    g = group_size
    out: list[Candidate] = []
    if m == 1:  # (inputs a warp and step, warps, K splits, stages): --sweep fraggemv, H100, 2026-11-28
        for bk, kw, split, stages in ((64, 4, 4, 1), (64, 4, 4, 4), (64, 2, 4, 1), (128, 2, 4, 1), (128, 2, 1, 3),
                                      (128, 2, 1, 1), (256, 2, 4, 1)):  # fmt: skip
            out.append(("frag_gemv", TileConfig(1, 16, bk, kw, stages, split=split)))
    if m <= 256:
        bm = min(128, max(16, _bucket(m)))
        splits = (1, 2, 4, 8) if m <= 64 else (1, 2, 4)
        for split in splits:
            for stages in (3, 4) if m <= 64 else (3,):
                out.append(("frag_mma", TileConfig(bm, 64, g, 4, stages, split=split)))
        if 64 < m <= 128:  # two 64-row tiles of x: fewer registers a thread (won 4096×6144 in --sweep fragmma)
            out += [("frag_mma", TileConfig(64, 64, g, 4, 3, split=split)) for split in (1, 2)]
    if m >= 32:
        out.append(("frag_dequant", None))
    if _cuda_ok():
        dev = torch.device("cuda", torch.cuda.current_device())
        if cuda_frag.why_not(dev, dtype, k, n, g) is None:  # group sizes 64 and up
            # the warp-group variant is correct but not yet faster than the Triton kernels (BENCHMARKS.md,
            # seventh version): timed only when asked for, on sm_90
            wgmma = os.environ.get("FASTAWQ_CUDA_WGMMA") == "1" and torch.cuda.get_device_capability() == (9, 0)
            out += [("cuda_mma", cfg) for cfg in cuda_frag.candidates(m, g, wgmma=wgmma)]
        if cuda_gemv.why_not(dev, dtype, k, n, g) is None:
            out += [("cuda_gemv", cfg) for cfg in cuda_gemv.candidates(m, n, k, g)]  # x-stationary, up to 16 rows
        if cuda_ws.why_not(dev, dtype, k, n, g) is None:  # Hopper: warp-specialized
            sms = torch.cuda.get_device_properties(dev).multi_processor_count
            for cfg in cuda_ws.candidates(m, n, k, sms, g):  # a cluster split only where its clusters fit at once
                if cfg.cl == 1 or cuda_ws.fits_one_wave(dev, dtype, m, n, k, g, cfg):
                    out.append(("cuda_ws", cfg))
    return out


def _cuda_ok() -> bool:
    """Whether the run-time-compiled CUDA kernels can join the tuning here (off: FASTAWQ_CUDA_KERNELS=0)."""
    return os.environ.get("FASTAWQ_CUDA_KERNELS", "1") != "0" and not interpreting() and torch.cuda.is_available()


def _default(m: int, n: int, k: int, g: int) -> Candidate:
    if m == 1:
        return ("frag_gemv", _gemv_default(m, n, k, g))
    if m <= 256:
        return ("frag_mma", mma_default(m, n, k, g))
    return ("frag_dequant", None)


def _run(
    c: Candidate, x2d: torch.Tensor, w: dict[str, torch.Tensor], g: int, bias: torch.Tensor | None
) -> torch.Tensor:
    name, cfg = c
    if cfg is None:
        return frag_dequant_matmul(x2d, w, g, bias)
    if isinstance(cfg, cuda_frag.CudaConfig):
        return cuda_frag.frag_mma_cuda(x2d, w, g, bias, cfg)
    if isinstance(cfg, cuda_ws.WsConfig):
        return cuda_ws.frag_ws(x2d, w, g, bias, cfg)
    if isinstance(cfg, cuda_gemv.GemvConfig):
        return cuda_gemv.frag_gemv_cuda(x2d, w, g, bias, cfg)
    assert isinstance(cfg, TileConfig)
    return (frag_gemv if name == "frag_gemv" else frag_mma)(x2d, w, g, bias, cfg)


def _plan_of(c: Candidate, x2d: torch.Tensor, m: int, n: int, k: int, g: int, has_bias: bool) -> Launch:
    """The launch of a candidate: a Triton plan, the CUDA kernel's compiled launch, None: dequantize + cuBLAS."""
    name, cfg = c
    if cfg is None:
        return None
    if isinstance(cfg, cuda_frag.CudaConfig):
        return cuda_frag.plan(x2d.device, x2d.dtype, m, n, k, g, cfg)
    if isinstance(cfg, cuda_ws.WsConfig):
        return cuda_ws.plan(x2d.device, x2d.dtype, m, n, k, g, cfg)
    if isinstance(cfg, cuda_gemv.GemvConfig):
        return cuda_gemv.plan(x2d.device, x2d.dtype, m, n, k, g, cfg)
    assert isinstance(cfg, TileConfig)
    make = plan_frag_gemv if name == "frag_gemv" else plan_frag_mma
    return make(m, n, k, g, x2d.dtype, has_bias, cfg)


FRAG_TUNER = Tuner(layouts.NK_FRAG, _check, candidates, _default, _run, _plan_of, frag_dequant_matmul)


def frag_auto(x2d: torch.Tensor, w: dict[str, torch.Tensor], g: int, bias: torch.Tensor | None) -> torch.Tensor:
    """The tuned choice among GEMV, MMA and dequantize + cuBLAS on ``nk_frag`` (like ``triton_awq.auto``)."""
    return FRAG_TUNER(x2d, w, g, bias)


def choice(x2d: torch.Tensor, w: dict[str, torch.Tensor], g: int, bias: torch.Tensor | None) -> str:
    """What :func:`frag_auto` runs for this call (after it has run once)."""
    return FRAG_TUNER.choice(x2d, w, g, bias)


__all__ = ["TUNE_LOG", "candidates", "choice", "frag_auto", "frag_dequant_matmul", "frag_dequantize", "frag_gemv",
           "frag_mma"]  # fmt: skip
