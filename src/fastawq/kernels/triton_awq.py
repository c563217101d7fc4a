"""Triton kernels for ``y = x @ dequant(W).T`` on the ``nk_int4`` layout (see :mod:`.layouts`).

Four ways to compute the product, chosen per call by :mod:`.dispatch` (the ``triton`` kernel times
them on the first call of each shape and M bucket and keeps the fastest):

``triton_mma``
    Decode and small batches (M ≤ 256). Tensor cores with the operands swapped (W·xᵀ), so the weight
    tile is the MMA's register operand and x (padded to ≥ 16 rows) the shared-memory one; codes are
    decoded with ``lop3`` magic-number tricks (two codes per instruction) and the zero point and scale
    of each group are applied to the fp32 result. Split-K programs (several along K per output tile)
    add fp32 partial sums into a per-stream workspace and the last to arrive writes y, up to 16 rows
    of x; above that they add into a zeroed output with atomics (:func:`_finish`). The decoded tile
    reaches the MMA through shared memory; :mod:`.triton_frag` (its own layout, the default on sm_90) avoids that.
``triton_gemv``
    M ≤ 4 rows. One program owns ``BN`` output columns and streams their packed rows along K. The
    ``pairs`` variant (the tuner's usual choice at batch 1) decodes each word into packed fp16/bf16
    pairs and multiplies two inputs per instruction, summing each word's eight products in fp32; the
    other one converts every code to fp32.
``triton_gemm``
    Tiles [BM, BN] with ``tl.dot`` on the tensor cores; every weight tile is unpacked and dequantized
    in registers in the loop, so the weight is read once as 4 bits.
``triton_dequant``
    Prefill-sized M: dequantize the weight into a [N, K] buffer of the activation dtype with one
    kernel, then cuBLAS. The buffer lives only for the call.

Importing this module imports ``triton``; :mod:`.dispatch` imports it only when a CUDA tensor (or
``TRITON_INTERPRET=1``) asks for it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import torch
import triton
import triton.language as tl

from fastawq.kernels import cuda_rt, layouts

GROUP_SIZES = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class TileConfig:
    bm: int
    bn: int
    bk: int
    num_warps: int
    num_stages: int
    group_m: int = 8
    #: unpack with in-register joins (else shift-and-reshape); both kept, the tuner picks per shape
    join: bool = True
    #: GEMV and MMA: programs per output tile along K, summed with atomics (1: plain stores)
    split: int = 1
    #: MMA, fp16 only: dequantize the tile in registers and accumulate through the MMA (else the zero
    #: point and scale are applied to each group's fp32 result)
    deq: bool = False
    #: GEMV: packed-pair arithmetic (two fp16/bf16 lanes per instruction, fp32 sums per word)
    pairs: bool = False
    #: nk_frag GEMV: load the next step's words before computing this one (0: no, 1: yes)
    prefetch: int = 0
    #: MMA: load the codes as int32 words and split them into bytes in registers (else byte loads)
    words: bool = False
    #: MMA: scales and zero points loaded in the loop (0, leaves every load to Triton's pipeline) or
    #: fetched by hand 1 or 2 groups ahead
    sz_ahead: int = 2

    def describe(self) -> str:
        extra = (" join" if self.join else "") + (f" split{self.split}" if self.split > 1 else "")
        extra += " deq" if self.deq else ""
        extra += " pairs" if self.pairs else ""
        extra += f" pf{self.prefetch}" if self.prefetch else ""
        extra += " words" if self.words else ""
        extra += f" sz{self.sz_ahead}" if self.sz_ahead != 2 else ""
        return f"bm{self.bm} bn{self.bn} bk{self.bk} w{self.num_warps} s{self.num_stages}{extra}"


#: ``bitcast(0x4B000000 | q)`` is the float 2**23 + q exactly: turns a nibble into a float without I2F
MAGIC: tl.constexpr = tl.constexpr(0x4B000000)
MAGIC_F: tl.constexpr = tl.constexpr(8388608.0)


@triton.jit
def _position_shifts():
    """[8] bit shifts that read inputs 8w … 8w+7 of an nk_int4 word, in k order."""
    return tl.arange(0, 8) * 4


@triton.jit
def _scale(sz):
    """fp32 scale from a packed ``sz_gn`` word (low 16 bits: the fp16 scale)."""
    return (sz & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _zero(sz):
    """fp32 zero point from a packed ``sz_gn`` word (bits 16…23)."""
    return (sz >> 16).to(tl.float32)


@triton.jit
def _dequant_tile(qw_ptr, sz_ptr, offs_n, mask_n, k0, N, K, G: tl.constexpr, BN: tl.constexpr,
                  BK: tl.constexpr):  # fmt: skip
    """The [BN, BK] fp32 weight tile at columns ``k0 … k0+BK`` of rows ``offs_n`` (shift-and-reshape)."""
    NG: tl.constexpr = BK // G if BK >= G else 1
    PER: tl.constexpr = BK // NG
    kw = K // 8
    offs_w = tl.arange(0, BK // 8)
    qw = tl.load(qw_ptr + offs_n[:, None] * kw + (k0 // 8 + offs_w)[None, :], mask=mask_n[:, None], other=0)
    q = (qw[:, :, None] >> _position_shifts()[None, None, :]) & 0xF
    q = tl.reshape(q, (BN, NG, PER)).to(tl.float32)
    offs_g = k0 // G + tl.arange(0, NG)
    sz_off = offs_n[:, None] + offs_g[None, :] * N  # scales and zero points are [K/G, N]
    sz = tl.load(sz_ptr + sz_off, mask=mask_n[:, None], other=0)
    s = _scale(sz)
    z = _zero(sz)
    w = (q - z[:, :, None]) * s[:, :, None]
    return tl.reshape(w, (BN, BK))


@triton.jit
def _nibble(qw, j: tl.constexpr):
    return (((qw >> (4 * j)) & 0xF) | MAGIC).to(tl.float32, bitcast=True)


@triton.jit
def _unpack_join(qw):
    """int32 words [..., W] → fp32 ``2**23 + code`` [..., W, 2, 2, 2] whose flattening is plain k order.

    ``tl.join`` adds an in-register last axis, so the unpacked codes stay in the thread that loaded the
    word: no shared-memory shuffle, no integer-to-float conversion.
    """
    lo = tl.join(tl.join(_nibble(qw, 0), _nibble(qw, 4)), tl.join(_nibble(qw, 2), _nibble(qw, 6)))
    hi = tl.join(tl.join(_nibble(qw, 1), _nibble(qw, 5)), tl.join(_nibble(qw, 3), _nibble(qw, 7)))
    return tl.join(lo, hi)


@triton.jit
def _finish(acc, y_ptrs, ws_ptrs, mask, cnt_ptr, ATOMIC: tl.constexpr, WS: tl.constexpr):
    """Write one program's fp32 tile: a plain store, or (ATOMIC: the programs along grid axis 2 each
    hold one slice of K) an atomic add into a zeroed y, or (ATOMIC and WS) split-K without that zeroing:
    each slice adds into the fp32 workspace, which starts zeroed, and bumps the tile's counter; the
    last slice to arrive writes the sum to y and leaves workspace and counter zeroed for the next call.
    """
    if not ATOMIC:
        tl.store(y_ptrs, acc.to(y_ptrs.dtype.element_ty), mask=mask)
    elif not WS:
        tl.atomic_add(y_ptrs, acc.to(y_ptrs.dtype.element_ty), mask=mask, sem="relaxed")
    else:
        tl.atomic_add(ws_ptrs, acc, mask=mask, sem="relaxed")
        tl.debug_barrier()  # every thread's adds happen before the counter's release (one thread's atomic)
        tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
        if tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel") == tl.num_programs(2) - 1:
            # read and re-zero in one atomic (as int32 bits: the interpreter has no float exchange)
            bits = tl.atomic_xchg(ws_ptrs.to(tl.pointer_type(tl.int32)), tl.zeros_like(acc).to(tl.int32), mask=mask,
                                  sem="relaxed")  # fmt: skip
            tl.store(y_ptrs, bits.to(tl.float32, bitcast=True).to(y_ptrs.dtype.element_ty), mask=mask)
            tl.store(cnt_ptr + tile, 0)


@triton.jit
def _store_mn(acc, b_ptr, y_ptr, ws_ptr, cnt_ptr, rows, offs_n, mask_m, mask_n, N, stride_ym, pid_k,
              HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, WS: tl.constexpr):  # fmt: skip
    """Epilogue of acc [BM, BN] (x rows × output columns): + bias (K slice 0 only), then :func:`_finish`."""
    if HAS_BIAS:
        b = tl.load(b_ptr + offs_n, mask=mask_n & ((offs_n * 0 + pid_k) == 0), other=0.0).to(tl.float32)
        acc += b[None, :]
    y_ptrs = y_ptr + rows[:, None] * stride_ym + offs_n[None, :]
    ws_ptrs = ws_ptr + rows[:, None] * N + offs_n[None, :]
    _finish(acc, y_ptrs, ws_ptrs, mask_m[:, None] & mask_n[None, :], cnt_ptr, ATOMIC, WS)


@triton.jit
def _store_nm(acc, b_ptr, y_ptr, ws_ptr, cnt_ptr, offs_n, offs_m, mask_n, mask_m, N, stride_ym, pid_k,
              HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, WS: tl.constexpr):  # fmt: skip
    """The same for acc [BN, BM] (the swapped-operand MMA kernels' W·xᵀ)."""
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=mask_n & ((offs_n * 0 + pid_k) == 0), other=0.0).to(tl.float32)
        acc += bias[:, None]
    y_ptrs = y_ptr + offs_m[None, :] * stride_ym + offs_n[:, None]
    ws_ptrs = ws_ptr + offs_m[None, :] * N + offs_n[:, None]
    _finish(acc, y_ptrs, ws_ptrs, mask_n[:, None] & mask_m[None, :], cnt_ptr, ATOMIC, WS)


@triton.jit
def _gemv_kernel(
    x_ptr, qw_ptr, sz_ptr, b_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, stride_xm, stride_ym,
    G: tl.constexpr, HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, NG: tl.constexpr,
    JOIN: tl.constexpr, SPLIT: tl.constexpr, WS: tl.constexpr,
):  # fmt: skip
    """One program: BN output columns × 1/SPLIT of K for BM rows of x, NG groups per step.

    Scales and zero points are factored out of the inner sum: y = Σ_g s_g · Σ_{k∈g} (q_k − z_g) x_k.
    The weight tile is unpacked once per step and reused by all BM rows (plain FMAs, no tensor cores).
    The next step's weights, scales and zero points are loaded before this step is computed, so memory
    stays busy. SPLIT > 1 adds partial sums into a zeroed output with atomics (more programs for narrow
    layers).
    """
    GW: tl.constexpr = G // 8  # packed words per group
    pid_n = tl.program_id(0)
    m0 = tl.program_id(1) * BM
    pid_k = tl.program_id(2)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    rows = m0 + tl.arange(0, BM)
    kw = tl.multiple_of(K // 8, GW)  # K is a multiple of G: row starts keep the loads' vector width
    kg = K // G
    per_split = kg // SPLIT
    g_lo = pid_k * per_split
    g_hi = g_lo + per_split
    words = tl.arange(0, NG)[:, None] * GW + tl.arange(0, GW)[None, :]  # [NG, GW] word index in the step
    ks = tl.arange(0, NG)[:, None] * G + tl.arange(0, G)[None, :]  # [NG, G] input index in the step
    q_ptrs = qw_ptr + offs_n[:, None, None] * kw + words[None, :, :]
    sz_ptrs = offs_n[:, None] + tl.arange(0, NG)[None, :] * N  # [K/G, N]: group g0 + j at (g0 + j)·N + n
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    qw_next = tl.load(q_ptrs + g_lo * GW, mask=mask_n[:, None, None], other=0)  # [BN, NG, GW]
    sz_next = tl.load(sz_ptr + sz_ptrs + g_lo * N, mask=mask_n[:, None], other=0)  # [BN, NG]
    for g0 in range(g_lo, g_hi, NG):
        qw = qw_next
        sz = sz_next
        more = (words * 0 + g0 + NG) < g_hi
        qw_next = tl.load(q_ptrs + (g0 + NG) * GW, mask=mask_n[:, None, None] & more[None, :, :], other=0)
        sz_more = (tl.arange(0, NG)[None, :] * 0 + g0 + NG) < g_hi
        sz_next = tl.load(sz_ptr + sz_ptrs + (g0 + NG) * N, mask=mask_n[:, None] & sz_more, other=0)
        s = _scale(sz)
        zf = _zero(sz) + MAGIC_F
        if JOIN:
            q = tl.reshape(_unpack_join(qw), (BN, NG, G)) - zf[:, :, None]
            for i in tl.static_range(BM):
                x = tl.load(x_ptr + (m0 + i) * stride_xm + g0 * G + ks, mask=(ks * 0 + m0 + i) < M, other=0.0)
                part = tl.sum(q * x.to(tl.float32)[None, :, :], axis=2)  # [BN, NG]
                contrib = tl.sum(part * s, axis=1)  # [BN]
                acc = tl.where((tl.arange(0, BM) == i)[:, None], acc + contrib[None, :], acc)
        else:  # BM == 1: eight shifted passes, x loaded per nibble
            part3 = tl.zeros((BN, NG, GW), dtype=tl.float32)
            for j in tl.static_range(8):
                xj = tl.load(x_ptr + m0 * stride_xm + (g0 * GW + words) * 8 + j).to(tl.float32)  # [NG, GW]
                part3 += (_nibble(qw, j) - zf[:, :, None]) * xj[None, :, :]
            acc += tl.sum(tl.sum(part3, axis=2) * s, axis=1)[None, :]
    _store_mn(
        acc, b_ptr, y_ptr, ws_ptr, cnt_ptr, rows, offs_n, rows < M, mask_n, N, stride_ym, pid_k, HAS_BIAS, SPLIT > 1, WS
    )


@triton.jit
def _gemm_kernel(
    x_ptr, qw_ptr, sz_ptr, b_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, stride_xm, stride_ym,
    G: tl.constexpr, HAS_BIAS: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr, JOIN: tl.constexpr,
    UPCAST: tl.constexpr,
):  # fmt: skip
    """Tiles [BM, BN], the weight tile dequantized in registers each K step, then ``tl.dot``.

    JOIN: unpack with in-register joins (needs BK ≤ G: one group per step); else shift-and-reshape.
    """
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    width = GROUP_M * num_n
    first_m = (pid // width) * GROUP_M
    rows = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % rows
    pid_n = (pid % width) // rows
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mask_m = offs_m < M
    mask_n = offs_n < N
    offs_k = tl.arange(0, BK)
    offs_w = tl.arange(0, BK // 8)
    kw = K // 8
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + (k0 + offs_k)[None, :], mask=mask_m[:, None], other=0.0)
        if JOIN:
            qw = tl.load(qw_ptr + offs_n[:, None] * kw + (k0 // 8 + offs_w)[None, :], mask=mask_n[:, None], other=0)
            sz = tl.load(sz_ptr + (k0 // G) * N + offs_n, mask=mask_n, other=0)
            s = _scale(sz)
            zf = _zero(sz) + MAGIC_F
            w = (tl.reshape(_unpack_join(qw), (BN, BK)) - zf[:, None]) * s[:, None]
        else:
            w = _dequant_tile(qw_ptr, sz_ptr, offs_n, mask_n, k0, N, K, G, BN, BK)
        if UPCAST:  # the interpreter's bf16 dot is wrong (triton 3.9): same roundings, fp32 product
            acc = tl.dot(x.to(tl.float32), tl.trans(w.to(x.dtype).to(tl.float32)), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, tl.trans(w.to(x.dtype)), acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    y_off = offs_m[:, None] * stride_ym + offs_n[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# Bytes → codes, four bytes (eight codes) per asm instance, elementwise: output r0[i] is the low nibble
# of input byte i and r1[i] its high nibble, whichever four bytes Triton packs into the register. A prmt
# puts bytes 0 and 1 in the two 16-bit halves; one lop3 then makes the fp16x2 pair 1024 + (lo0, lo1)
# and another 1024 + 16·(hi0, hi1) (fixed by one fma with 1/16); a shift by 8 does bytes 2 and 3.
# 10 instructions for 8 exact codes. bf16 has too few mantissa bits for the ×16 trick, so each nibble
# is shifted down first (128 + q is exact in bf16).
_ASM_F16: tl.constexpr = tl.constexpr("""{
.reg .b32 w, t, m, c16, c64;
mov.b32 m, 0x64006400;
mov.b32 c16, 0x2C002C00;
mov.b32 c64, 0xD400D400;
prmt.b32 w, $4, 0, 0x3120;
shr.b32 t, w, 8;
lop3.b32 $0, w, 0x000f000f, 0x64006400, 0xea;
lop3.b32 $2, w, 0x00f000f0, 0x64006400, 0xea;
lop3.b32 $1, t, 0x000f000f, 0x64006400, 0xea;
lop3.b32 $3, t, 0x00f000f0, 0x64006400, 0xea;
sub.f16x2 $0, $0, m;
sub.f16x2 $1, $1, m;
fma.rn.f16x2 $2, $2, c16, c64;
fma.rn.f16x2 $3, $3, c16, c64;
}""")
_ASM_BF16: tl.constexpr = tl.constexpr("""{
.reg .b32 w, t4, t8, t12, one, m;
mov.b32 one, 0x3F803F80;
mov.b32 m, 0xC300C300;
prmt.b32 w, $4, 0, 0x3120;
shr.b32 t4, w, 4;
shr.b32 t8, w, 8;
shr.b32 t12, w, 12;
lop3.b32 $0, w, 0x000f000f, 0x43004300, 0xea;
lop3.b32 $2, t4, 0x000f000f, 0x43004300, 0xea;
lop3.b32 $1, t8, 0x000f000f, 0x43004300, 0xea;
lop3.b32 $3, t12, 0x000f000f, 0x43004300, 0xea;
fma.rn.bf16x2 $0, $0, one, m;
fma.rn.bf16x2 $1, $1, one, m;
fma.rn.bf16x2 $2, $2, one, m;
fma.rn.bf16x2 $3, $3, one, m;
}""")


@triton.jit
def _load_codes(qw_ptr, offs_n, mask_n, k0, K, BN: tl.constexpr, BK: tl.constexpr, ASM: tl.constexpr):
    """The packed codes of rows ``offs_n``, inputs ``k0 … k0+BK``, as :func:`_decode_codes` wants them.

    ASM: bytes [BN, BK/2] (byte i holds inputs 2i and 2i+1 in its low and high nibble); else int32
    words [BN, BK/8].
    """
    if ASM == 1:
        offs_b = k0 // 2 + tl.arange(0, BK // 2)
        row_bytes = tl.multiple_of(K // 2, BK // 2)  # K is a multiple of BK here: keeps the vector width
        return tl.load(qw_ptr.to(tl.pointer_type(tl.uint8)) + offs_n[:, None] * row_bytes + offs_b[None, :],
                       mask=mask_n[:, None], other=0)  # fmt: skip
    else:
        offs_w = k0 // 8 + tl.arange(0, BK // 8)
        kw = tl.multiple_of(K // 8, BK // 8)
        return tl.load(qw_ptr + offs_n[:, None] * kw + offs_w[None, :], mask=mask_n[:, None], other=0)


@triton.jit
def _decode_codes(b, BN: tl.constexpr, BK: tl.constexpr, DT: tl.constexpr, ASM: tl.constexpr):
    """The raw codes 0…15 of a :func:`_load_codes` tile as a [BN, BK] tile of dtype DT.

    ASM: decoded with the sequences above; ``tl.join`` of the two outputs restores k order. Else shifts
    and masks (the interpreter, and a reference on GPUs).
    """
    if ASM:
        if ASM == 2:  # words: split into bytes in registers
            b = tl.join(
                tl.join((b & 0xFF).to(tl.uint8), ((b >> 16) & 0xFF).to(tl.uint8)),
                tl.join(((b >> 8) & 0xFF).to(tl.uint8), ((b >> 24) & 0xFF).to(tl.uint8)),
            )
            b = tl.reshape(b, (BN, BK // 2))
        if tl.float16 == DT:
            r0, r1 = tl.inline_asm_elementwise(_ASM_F16, "=r,=r,=r,=r,r", [b], dtype=(tl.float16, tl.float16),
                                               is_pure=True, pack=4)  # fmt: skip
        else:
            r0, r1 = tl.inline_asm_elementwise(_ASM_BF16, "=r,=r,=r,=r,r", [b], dtype=(tl.bfloat16, tl.bfloat16),
                                               is_pure=True, pack=4)  # fmt: skip
        return tl.reshape(tl.join(r0, r1), (BN, BK))
    else:
        q = (b[:, :, None] >> _position_shifts()[None, None, :]) & 0xF
        return tl.reshape(q, (BN, BK)).to(tl.float32).to(DT)  # int → bf16 directly is wrong in the interpreter


# Packed-pair GEMV (``pairs``): the codes of one int32 word are decoded into four registers that each
# hold two exact (q − z) values in the activation dtype, pair j = inputs (8w+2j, 8w+2j+1); x is read as
# the same pairs, so the eight products of a word take four f16x2/bf16x2 FMAs and leave as one fp32 sum.
# Decode of pair j: a prmt puts byte j of the word in the low half and byte j of (word >> 4) in the high
# half, one lop3 keeps each half's low nibble under the magic exponent (1024 + q in fp16, 128 + q in
# bf16, both exact), and one fma subtracts the group's (magic + z) pair: 3 instructions per two codes.
# fp16 activations are scaled by 1/64 before the products (exact above 2**-8), so a word's partial sum
# (at most 4·15/64·|x| per lane) cannot overflow fp16; the 64 goes back on with the scale, in fp32.
def _pairs_asm(f16: bool) -> str:
    """The decode sequence of ``_pairs``: $4 the word, $5 the −(magic + z) pair, $0…$3 pairs 0…3."""
    magic, one, ty = ("0x64006400", "0x3C003C00", "f16x2") if f16 else ("0x43004300", "0x3F803F80", "bf16x2")
    body = [".reg .b32 s, t, one;", f"mov.b32 one, {one};", "shr.b32 s, $4, 4;"]
    for j in range(4):  # pair j: byte j of the word (low half) and of word >> 4 (high half)
        body += [
            f"prmt.b32 t, $4, s, 0x0{4 + j}0{j};",
            f"lop3.b32 t, t, 0x000f000f, {magic}, 0xea;",
            f"fma.rn.{ty} ${j}, t, one, $5;",
        ]
    return "{\n" + "\n".join(body) + "\n}"


_ASM_PAIRS_F16: tl.constexpr = tl.constexpr(_pairs_asm(f16=True))
_ASM_PAIRS_BF16: tl.constexpr = tl.constexpr(_pairs_asm(f16=False))


def _dot_asm(f16: bool, pairs: int) -> str:
    """fp32 Σ of ``pairs`` pair products: $1…$pairs the weight pairs, the next ``pairs`` inputs the x
    pairs; each lane accumulates in the activation dtype (first product rounded, then fmas), then the
    two lanes are added in fp32. bf16 starts from an fma with −0 (no bf16x2 multiply is used)."""
    w = [f"${1 + i}" for i in range(pairs)]
    x = [f"${1 + pairs + i}" for i in range(pairs)]
    if f16:
        body = [".reg .b32 a;", ".reg .b16 lo, hi;", ".reg .f32 fl, fh;", f"mul.rn.f16x2 a, {w[0]}, {x[0]};"]
        body += [f"fma.rn.f16x2 a, {w[i]}, {x[i]}, a;" for i in range(1, pairs)]
        body += ["mov.b32 {lo, hi}, a;", "cvt.f32.f16 fl, lo;", "cvt.f32.f16 fh, hi;", "add.f32 fl, fl, fh;",
                 "mov.b32 $0, fl;"]  # fmt: skip
    else:
        body = [".reg .b32 a, z, lo, hi;", "mov.b32 z, 0x80008000;", f"fma.rn.bf16x2 a, {w[0]}, {x[0]}, z;"]
        body += [f"fma.rn.bf16x2 a, {w[i]}, {x[i]}, a;" for i in range(1, pairs)]
        body += ["shl.b32 lo, a, 16;", "and.b32 hi, a, 0xffff0000;", "add.f32 $0, lo, hi;"]
    return "{\n" + "\n".join(body) + "\n}"


_ASM_DOT_F16: tl.constexpr = tl.constexpr(_dot_asm(f16=True, pairs=4))
_ASM_DOT_BF16: tl.constexpr = tl.constexpr(_dot_asm(f16=False, pairs=4))

_ASM_X64_F16: tl.constexpr = tl.constexpr("""{
.reg .b32 c;
mov.b32 c, 0x24002400;
mul.rn.f16x2 $0, $1, c;
}""")


@triton.jit
def _half_bits(v, DT: tl.constexpr):
    """Bits of ``v`` rounded to DT, in the low 16 bits of an int32 (interpreter emulation of a lane)."""
    return v.to(DT).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF


@triton.jit
def _half_value(bits, DT: tl.constexpr):
    """fp32 value of the DT lane in the low 16 bits of ``bits``."""
    return (bits & 0xFFFF).to(tl.int16).to(DT, bitcast=True).to(tl.float32)


@triton.jit
def _emu_pair(lo, hi, DT: tl.constexpr):
    """Interpreter emulation of a packed pair: ``lo`` and ``hi`` rounded to DT in one int32."""
    return _half_bits(lo, DT) | (_half_bits(hi, DT) << 16)


@triton.jit
def _code(qw, j: tl.constexpr):
    """fp32 code j (input 8w + j) of nk_int4 words."""
    return ((qw >> (4 * j)) & 0xF).to(tl.float32)


@triton.jit
def _pairs(qw, z, DT: tl.constexpr, ASM: tl.constexpr):
    """Four packed pairs of exact (q − z) per word (see the sequences above); z: the word's zero point."""
    if ASM:
        magic = 0x6400 if tl.float16 == DT else 0x4300
        zc = ((magic + z) | 0x8000) * 0x10001  # the pair −(magic + z)
        if tl.float16 == DT:
            return tl.inline_asm_elementwise(
                _ASM_PAIRS_F16, "=r,=r,=r,=r,r,r", [qw, zc], (tl.int32, tl.int32, tl.int32, tl.int32), True, 1
            )
        else:
            return tl.inline_asm_elementwise(
                _ASM_PAIRS_BF16, "=r,=r,=r,=r,r,r", [qw, zc], (tl.int32, tl.int32, tl.int32, tl.int32), True, 1
            )
    else:
        zf = z.to(tl.float32)
        p0 = _emu_pair(_code(qw, 0) - zf, _code(qw, 1) - zf, DT)
        p1 = _emu_pair(_code(qw, 2) - zf, _code(qw, 3) - zf, DT)
        p2 = _emu_pair(_code(qw, 4) - zf, _code(qw, 5) - zf, DT)
        p3 = _emu_pair(_code(qw, 6) - zf, _code(qw, 7) - zf, DT)
        return p0, p1, p2, p3


@triton.jit
def _x_pairs(x_ptr, row_off, words, mask, DT: tl.constexpr, ASM: tl.constexpr):
    """The four x pairs of each word in ``words`` (fp16: scaled by 1/64), as int32."""
    base = x_ptr.to(tl.pointer_type(tl.int32)) + row_off + words * 4
    x0 = tl.load(base, mask=mask, other=0)
    x1 = tl.load(base + 1, mask=mask, other=0)
    x2 = tl.load(base + 2, mask=mask, other=0)
    x3 = tl.load(base + 3, mask=mask, other=0)
    return _x_scaled(x0, DT, ASM), _x_scaled(x1, DT, ASM), _x_scaled(x2, DT, ASM), _x_scaled(x3, DT, ASM)


@triton.jit
def _x_scaled(x, DT: tl.constexpr, ASM: tl.constexpr):
    """fp16 x pairs (int32) scaled by 1/64, so a word's partial sums stay far from fp16's range; bf16 as is."""
    if tl.float16 == DT:
        if ASM:
            return tl.inline_asm_elementwise(_ASM_X64_F16, "=r,r", [x], dtype=tl.int32, is_pure=True, pack=1)
        else:
            return _emu_pair(_half_value(x, DT) / 64, _half_value(x >> 16, DT) / 64, DT)
    return x


@triton.jit
def _pair_dot(p0, p1, p2, p3, x0, x1, x2, x3, DT: tl.constexpr, ASM: tl.constexpr):
    """fp32 Σ of a word's eight products from its packed pairs."""
    if ASM:
        if tl.float16 == DT:
            return tl.inline_asm_elementwise(_ASM_DOT_F16, "=r,r,r,r,r,r,r,r,r", [p0, p1, p2, p3, x0, x1, x2, x3],
                                             dtype=tl.float32, is_pure=True, pack=1)  # fmt: skip
        else:
            return tl.inline_asm_elementwise(_ASM_DOT_BF16, "=r,r,r,r,r,r,r,r,r", [p0, p1, p2, p3, x0, x1, x2, x3],
                                             dtype=tl.float32, is_pure=True, pack=1)  # fmt: skip
    else:
        d = _half_value(p0, DT) * _half_value(x0, DT) + _half_value(p0 >> 16, DT) * _half_value(x0 >> 16, DT)
        d += _half_value(p1, DT) * _half_value(x1, DT) + _half_value(p1 >> 16, DT) * _half_value(x1 >> 16, DT)
        d += _half_value(p2, DT) * _half_value(x2, DT) + _half_value(p2 >> 16, DT) * _half_value(x2 >> 16, DT)
        d += _half_value(p3, DT) * _half_value(x3, DT) + _half_value(p3 >> 16, DT) * _half_value(x3 >> 16, DT)
        return d


@triton.jit
def _gemv_pairs_kernel(
    x_ptr, qw_ptr, sz_ptr, b_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, stride_xm, stride_ym,
    G: tl.constexpr, HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, NG: tl.constexpr,
    SPLIT: tl.constexpr, ASM: tl.constexpr, PIPE: tl.constexpr, WS: tl.constexpr,
):  # fmt: skip
    """The GEMV of :func:`_gemv_kernel` with packed-pair arithmetic (see the sequences above).

    PIPE: the loads stay in the loop for Triton's software pipeline (num_stages ≥ 3: prefetched
    steps wait in shared memory); else the next step is prefetched by hand into registers.

    One program: BN output columns × 1/SPLIT of K for BM rows of x, NG groups per step; each word is
    decoded once and reused by the BM rows. y = Σ_g s_g · Σ_words Σ_pairs (q − z)·x, the inner sums per
    word in the activation dtype (four products per lane), everything after in fp32.
    """
    DT: tl.constexpr = x_ptr.dtype.element_ty
    GW: tl.constexpr = G // 8
    XS: tl.constexpr = 64.0 if tl.float16 == DT else 1.0  # x was scaled by 1/XS
    pid_n = tl.program_id(0)
    m0 = tl.program_id(1) * BM
    pid_k = tl.program_id(2)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    kw = tl.multiple_of(K // 8, GW)  # K is a multiple of G: row starts keep the loads' vector width
    per_split = (K // G) // SPLIT
    g_lo = pid_k * per_split
    g_hi = g_lo + per_split
    words = tl.arange(0, NG)[:, None] * GW + tl.arange(0, GW)[None, :]  # [NG, GW] word index in the step
    q_ptrs = qw_ptr + offs_n[:, None, None] * kw + words[None, :, :]
    sz_ptrs = offs_n[:, None] + tl.arange(0, NG)[None, :] * N
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    acc3 = tl.zeros((BN, NG, GW), dtype=tl.float32)  # BM == 1: per-word sums, reduced once at the end
    qw_next = tl.load(q_ptrs + g_lo * GW, mask=mask_n[:, None, None], other=0)
    sz_next = tl.load(sz_ptr + sz_ptrs + g_lo * N, mask=mask_n[:, None], other=0)
    for g0 in range(g_lo, g_hi, NG):
        if PIPE:
            qw = tl.load(q_ptrs + g0 * GW, mask=mask_n[:, None, None], other=0)
            sz = tl.load(sz_ptr + sz_ptrs + g0 * N, mask=mask_n[:, None], other=0)
        else:
            qw = qw_next
            sz = sz_next
            # the step after the last one reloads the last one (cached) instead of masking per element,
            # which would cost the loads their vector width
            g_next = tl.minimum(g0 + NG, g_hi - NG)
            qw_next = tl.load(q_ptrs + g_next * GW, mask=mask_n[:, None, None], other=0)
            sz_next = tl.load(sz_ptr + sz_ptrs + g_next * N, mask=mask_n[:, None], other=0)
        s = _scale(sz) * XS
        z = tl.broadcast_to(((sz >> 16) & 0xFF)[:, :, None], (BN, NG, GW))
        p0, p1, p2, p3 = _pairs(qw, z, DT, ASM)
        for i in tl.static_range(BM):
            row_ok = (words * 0 + m0 + i) < M
            x0, x1, x2, x3 = _x_pairs(x_ptr, (m0 + i) * (stride_xm // 2) + g0 * (G // 2), words, row_ok, DT, ASM)
            d = _pair_dot(p0, p1, p2, p3, x0[None, :, :], x1[None, :, :], x2[None, :, :], x3[None, :, :], DT, ASM)
            if BM == 1:
                acc3 += d * s[:, :, None]
            else:
                contrib = tl.sum(tl.sum(d, axis=2) * s, axis=1)
                acc = tl.where((tl.arange(0, BM) == i)[:, None], acc + contrib[None, :], acc)
    if BM == 1:
        acc += tl.sum(tl.sum(acc3, axis=2), axis=1)[None, :]
    rows = m0 + tl.arange(0, BM)
    _store_mn(
        acc, b_ptr, y_ptr, ws_ptr, cnt_ptr, rows, offs_n, rows < M, mask_n, N, stride_ym, pid_k, HAS_BIAS, SPLIT > 1, WS
    )


@triton.jit
def _mma_kernel(
    x_ptr, qw_ptr, sz_ptr, b_ptr, y_ptr, ws_ptr, cnt_ptr,
    M, N, K, stride_xm, stride_ym, groups_per_split,
    G: tl.constexpr, HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, NG: tl.constexpr,
    ATOMIC: tl.constexpr, ASM: tl.constexpr, UPCAST: tl.constexpr, DEQ: tl.constexpr, SZ: tl.constexpr,
    WS: tl.constexpr,
):  # fmt: skip
    """Tensor cores with the operands swapped: acc[BN, BM] = W·xᵀ, NG groups of K per step.

    The weight tile is the left operand, so it feeds the MMA straight from registers after unpacking,
    and a handful of rows of x (padded to BM ≥ 16) is the right one. By default each group multiplies
    q − z (exact in fp16/bf16) and applies its scale to the fp32 result:
    y[n] += s[n, g] · Σ_k (q[n, k] − z[n, g])·x[k]. DEQ (fp16): the tile is dequantized in registers
    and the MMA accumulates across groups. Several programs along K add into a zeroed output with
    atomics (ATOMIC).
    """
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_m = pid_m * BM + tl.arange(0, BM)
    mask_n = offs_n < N
    mask_m = offs_m < M
    offs_k = tl.arange(0, G)
    g_lo = pid_k * groups_per_split
    g_last = g_lo + groups_per_split - 1
    acc = tl.zeros((BN, BM), dtype=tl.float32)
    # SZ: scales and zero points are loaded in the loop (0) or fetched by hand one (1) or two (2) groups
    # ahead of their use. With 2, Triton's pipeliner leaves every load of the loop alone.
    if SZ >= 1:
        sz1 = tl.load(sz_ptr + g_lo * N + offs_n, mask=mask_n, other=0)
    if SZ >= 2:
        sz2 = tl.load(sz_ptr + tl.minimum(g_lo + 1, g_last) * N + offs_n, mask=mask_n, other=0)
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :]
    for g0 in range(g_lo, g_last + 1, NG):
        for i in tl.static_range(NG):  # NG groups per step: longer runs of each weight row per step
            g = g0 + i
            if SZ == 0:
                sz = tl.load(sz_ptr + g * N + offs_n, mask=mask_n, other=0)
            elif SZ == 1:
                sz = sz1
                sz1 = tl.load(sz_ptr + tl.minimum(g + 1, g_last) * N + offs_n, mask=mask_n, other=0)
            else:
                sz = sz1
                sz1 = sz2
                sz2 = tl.load(sz_ptr + tl.minimum(g + 2, g_last) * N + offs_n, mask=mask_n, other=0)
            s = _scale(sz)
            z = _zero(sz)
            k0 = g * G
            x = tl.load(x_ptrs + k0, mask=mask_m[:, None], other=0.0)
            q = _decode_codes(_load_codes(qw_ptr, offs_n, mask_n, k0, K, BN, G, ASM), BN, G, x.dtype, ASM)
            if DEQ:  # fp16: (q - z) is exact and one rounding of ·s gives the reference's fp16 weight
                w = (q - z.to(tl.float16)[:, None]) * s.to(tl.float16)[:, None]
                acc = tl.dot(w, tl.trans(x), acc)
            else:  # q - z is exact in fp16 and bf16 (|q - z| ≤ 15); the scale goes on the fp32 result
                if UPCAST:  # the interpreter's bf16 dot is wrong (triton 3.9); q - z and x are exact in fp32
                    qz = q.to(tl.float32) - z[:, None]
                    d = tl.dot(qz, tl.trans(x.to(tl.float32)), input_precision="ieee")
                else:
                    d = tl.dot(q - z.to(q.dtype)[:, None], tl.trans(x))
                acc += s[:, None] * d
    _store_nm(
        acc, b_ptr, y_ptr, ws_ptr, cnt_ptr, offs_n, offs_m, mask_n, mask_m, N, stride_ym, pid_k, HAS_BIAS, ATOMIC, WS
    )


@triton.jit
def _dequant_kernel(
    qw_ptr, sz_ptr, w_ptr, N, K,
    G: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mask_n = offs_n < N
    k0 = pid_k * BK
    w = _dequant_tile(qw_ptr, sz_ptr, offs_n, mask_n, k0, N, K, G, BN, BK)
    offs_k = k0 + tl.arange(0, BK)
    tl.store(w_ptr + offs_n[:, None] * K + offs_k[None, :], w.to(w_ptr.dtype.element_ty), mask=mask_n[:, None])


# ------------------------------------------------------------------------------------------- launchers
#
# A launcher turns (M, N, K, G, dtype, bias?, TileConfig) into a ``Plan``: the kernel, grid, constexprs
# and integer arguments of one launch; ``_execute`` then allocates the output and launches it. Plans are
# interned, and ``auto`` keeps the tuned plan per exact M, so a repeated call costs a dictionary lookup.
#
# Triton's ``kernel[grid](...)`` binds and specializes every argument on every call (tens of µs of
# Python per launch, more than the kernel itself at batch 1). ``_execute`` does that once per plan and
# argument specialization, then launches the compiled kernel directly. The key holds everything Triton
# specializes an argument on here (pointer dtype and 16-byte alignment; integers: == 0, == 1, divisible
# by 16, 32-bit range), so a compiled kernel is only reused for arguments it was compiled for.


#: Triton decides at ``@triton.jit`` time (this module's import) whether kernels are interpreted
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def interpreting() -> bool:
    """True when this module's kernels run under Triton's interpreter (``TRITON_INTERPRET=1`` at import)."""
    return _INTERPRET


FAST_LAUNCH = os.environ.get("FASTAWQ_FAST_LAUNCH", "1") != "0"


@dataclass(frozen=True, eq=False)  # interned (see _plan): identity is equality, and hashing is cheap
class Plan:
    kernel: triton.JITFunction
    grid: tuple[int, int, int]
    #: integer arguments after (x, qweight, sz, bias, y, workspace, counters, M, N, K, stride_xm, stride_ym)
    extra: tuple[int, ...]
    consts: tuple[tuple[str, object], ...]
    num_warps: int
    num_stages: int
    #: split-K: programs add into a zeroed output with atomics
    zero_y: bool
    #: x is read as int32 pairs: it must be 4-byte aligned with an even row stride
    int32_x: bool
    #: the layout tensor holding the codes (``qweight_nk`` or ``qweight_frag``)
    weight: str = "qweight_nk"
    #: split-K through the fp32 workspace and tile counters (see :func:`_finish`); ``fallback`` is the
    #: same kernel adding into a zeroed output, for calls that get no workspace
    ws: bool = False
    fallback: Plan | None = None


_PLANS: dict[tuple[object, ...], Plan] = {}
#: compiled kernel and its trailing constexpr values, by (plan, device, argument specialization)
_COMPILED: dict[tuple[object, ...], tuple[object, tuple[object, ...]]] = {}


def _plan(key: tuple[object, ...], kernel: triton.JITFunction, grid: tuple[int, ...], extra: tuple[int, ...],
          num_warps: int, num_stages: int, zero_y: bool, int32_x: bool, weight: str = "qweight_nk",
          **consts: object) -> Plan:  # fmt: skip
    """Make and intern the plan of ``key`` (the plan_* builders look it up first).

    A split-K plan (``zero_y``) of a kernel with the ``WS`` switch runs through the workspace, with
    the zeroed-output variant as its fallback.
    """
    grid3 = (grid + (1, 1))[:3]
    has_ws = "WS" in kernel.arg_names

    def make(zero: bool, ws: bool = False, fallback: Plan | None = None) -> Plan:
        c = {**consts, "WS": ws} if has_ws else consts
        return Plan(kernel, grid3, extra, tuple(c.items()), num_warps, num_stages, zero, int32_x, weight, ws, fallback)  # type: ignore[arg-type]

    plan = make(False, ws=True, fallback=make(True)) if zero_y and has_ws else make(zero_y)
    _PLANS[key] = plan
    return plan


#: split-K workspaces per (device, stream): fp32 partial sums [M·N] and int32 tile counters, both kept
#: zeroed between calls by the kernels themselves. Per stream, so kernels on two streams never share one.
_WORKSPACES: dict[tuple[int | None, int], tuple[torch.Tensor, torch.Tensor]] = {}
#: the largest fp32 workspace a layer may use; bigger split-K outputs add into a zeroed y instead
WORKSPACE_MAX_BYTES = 64 << 20
#: split-K goes through the workspace up to this many rows of x. On an H100 it saved 1–2 µs a call
#: at M ≤ 16 (the zeroing kernel and its launch) and cost 10–40 % at M ≥ 64, where the fp32 partial
#: sums outweigh them (``benchmarks/kernels.py --sweep splitk``).
WORKSPACE_MAX_ROWS = 16


def _workspace(device: torch.device, numel: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The calling stream's workspace with room for ``numel`` partial sums and ``tiles`` counters, or
    None: too large, or a CUDA graph is being captured (a buffer made then would be zeroed only when the
    graph replays, so captured calls use the zeroed-output variant)."""
    if numel * 4 > WORKSPACE_MAX_BYTES:
        return None
    stream = 0
    if device.type == "cuda":
        if torch.cuda.is_current_stream_capturing():
            return None
        stream = cuda_rt.current_stream_handle(device)
    key = (device.index, stream)
    buf = _WORKSPACES.get(key)
    if buf is None or buf[0].numel() < numel or buf[1].numel() < tiles:
        have = (buf[0].numel(), buf[1].numel()) if buf is not None else (0, 0)
        ws = torch.zeros(max(triton.next_power_of_2(numel), have[0]), device=device, dtype=torch.float32)
        cnt = torch.zeros(max(triton.next_power_of_2(tiles), have[1], 64), device=device, dtype=torch.int32)
        buf = _WORKSPACES[key] = (ws, cnt)
    return buf


def _triton_launch(p: Plan, args: tuple[object, ...]) -> object:
    """Launch through Triton's own launcher (binds every argument); returns the compiled kernel."""
    return p.kernel[p.grid](*args, **dict(p.consts), num_warps=p.num_warps, num_stages=p.num_stages)


def _int_spec(a: int) -> tuple[bool, bool, bool, bool]:
    return (a == 0, a == 1, a % 16 == 0, -(2**31) <= a < 2**31)


def _execute(p: Plan, x2d: torch.Tensor, w: dict[str, torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
    """Run plan ``p`` on these tensors (shapes as planned) and return y [M, N]."""
    if x2d.stride(1) != 1 or (p.int32_x and (x2d.data_ptr() % 4 or x2d.stride(0) % 2)):
        x2d = x2d.clone(memory_format=torch.contiguous_format)
    m, k = x2d.shape
    qw, sz = w[p.weight], w["sz_gn"]
    n = sz.shape[1]
    buf = None
    if p.ws:
        if m <= WORKSPACE_MAX_ROWS or interpreting():  # the interpreter has no bf16 atomics for the fallback
            buf = _workspace(x2d.device, m * n, p.grid[0] * p.grid[1])
        if buf is None:
            assert p.fallback is not None
            p = p.fallback
    y = (torch.zeros if p.zero_y else torch.empty)(m, n, device=x2d.device, dtype=x2d.dtype)
    b = bias if bias is not None else y
    ws, cnt = buf if buf is not None else (y, y)  # (y, y): the kernel does not touch them
    args = (x2d, qw, sz, b, y, ws, cnt, m, n, k, x2d.stride(0), n) + p.extra
    if not FAST_LAUNCH or interpreting():
        _triton_launch(p, args)
        return y
    ptrs = (x2d.data_ptr() % 16, qw.data_ptr() % 16, sz.data_ptr() % 16, b.data_ptr() % 16, y.data_ptr() % 16,
            ws.dtype, cnt.dtype)  # fmt: skip
    key = (p, x2d.device.index, x2d.dtype, b.dtype, _int_spec(x2d.stride(0)), ptrs)
    hit = _COMPILED.get(key)
    if hit is None:
        compiled = _triton_launch(p, args)
        if compiled is not None and hasattr(compiled, "__getitem__"):
            consts = dict(p.consts)
            _COMPILED[key] = (compiled, tuple(consts[name] for name in p.kernel.arg_names[len(args) :]))
        return y
    compiled, tail = hit
    try:
        compiled[p.grid](*args, *tail)  # type: ignore[index]
    except (TypeError, AttributeError, ValueError) as exc:  # a Triton whose compiled-kernel call differs
        _stop_fast_launch(exc)
        _triton_launch(p, args)
    return y


def _stop_fast_launch(exc: Exception) -> None:
    global FAST_LAUNCH
    FAST_LAUNCH = False
    _COMPILED.clear()
    warnings.warn(
        f"fastawq: launching compiled Triton {triton.__version__} kernels directly failed ({exc!r}); "
        "every call now goes through Triton's launcher (slower on the host, same results)",
        RuntimeWarning,
        stacklevel=3,
    )


def _fit_bk(bk: int, k: int, group_size: int) -> int:
    """The largest power of two ≤ ``bk`` that divides K (K is a multiple of the group size)."""
    bk = max(16, bk)
    while k % bk:
        bk //= 2
    if bk < group_size and group_size % bk:
        bk = group_size
    return bk


def _groups_per_step(bk: int, k: int, group_size: int) -> int:
    """Groups per GEMV or MMA step: the largest power of two ≤ bk/G dividing K/G."""
    kg = k // group_size
    ng = max(1, bk // group_size)
    while kg % ng:
        ng //= 2
    return ng


def gemv_config(m: int, n: int, k: int, group_size: int) -> TileConfig:
    """Untuned default (a good single config of the H100 sweep in BENCHMARKS.md)."""
    return TileConfig(bm=min(8, _bucket(m)), bn=16, bk=1024 if m == 1 else 512, num_warps=4, num_stages=2)


def gemm_config(m: int, n: int, k: int, group_size: int) -> TileConfig:
    """Untuned default for the fused GEMM."""
    if m <= 16:
        return TileConfig(16, 32, 128, 4, 3)
    if m <= 32:
        return TileConfig(32, 32, 128, 4, 3)
    if m <= 64:
        return TileConfig(64, 64, 128, 4, 3)
    return TileConfig(128, 128, 128, 8, 3)


def mma_config(m: int, n: int, k: int, group_size: int) -> TileConfig:
    """Untuned default for the tensor-core kernel (bk: inputs per step, whole groups; join: lop3 unpacking)."""
    bm = min(64, max(16, _bucket(m)))
    return TileConfig(bm=bm, bn=64, bk=max(128, group_size), num_warps=4, num_stages=3, split=8 if m <= 16 else 4)


def _check(x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int) -> tuple[int, int, int]:
    n, kw = w["qweight_nk"].shape
    k = kw * 8
    m = x2d.shape[0]
    if x2d.shape[1] != k:
        raise ValueError(f"input has {x2d.shape[1]} features, the layer expects {k}")
    if k % group_size or group_size not in GROUP_SIZES:
        raise ValueError(f"group size {group_size} must be one of {GROUP_SIZES} and divide K={k}")
    return m, n, k


def plan_gemv(m: int, n: int, k: int, g: int, dtype: torch.dtype, has_bias: bool, cfg: TileConfig) -> Plan:
    key = ("gemv", m, n, k, g, dtype, has_bias, cfg)
    if (p := _PLANS.get(key)) is not None:
        return p
    ng = _groups_per_step(cfg.bk, k, g)
    split = cfg.split
    while (k // g) % (split * ng):
        split //= 2
    if cfg.pairs:
        grid = (triton.cdiv(n, cfg.bn), triton.cdiv(m, cfg.bm), split)
        return _plan(
            key, _gemv_pairs_kernel, grid, (), cfg.num_warps, cfg.num_stages, split > 1, True,
            G=g, HAS_BIAS=has_bias, BM=cfg.bm, BN=cfg.bn, NG=ng, SPLIT=split, ASM=not interpreting(),
            PIPE=cfg.num_stages >= 3,
        )  # fmt: skip
    bm = cfg.bm if cfg.join else 1
    return _plan(
        key, _gemv_kernel, (triton.cdiv(n, cfg.bn), triton.cdiv(m, bm), split), (), cfg.num_warps,
        cfg.num_stages, split > 1, False, G=g, HAS_BIAS=has_bias, BM=bm, BN=cfg.bn, NG=ng, JOIN=cfg.join,
        SPLIT=split,
    )  # fmt: skip


def plan_gemm(m: int, n: int, k: int, g: int, dtype: torch.dtype, has_bias: bool, cfg: TileConfig) -> Plan:
    key = ("gemm", m, n, k, g, dtype, has_bias, cfg)
    if (p := _PLANS.get(key)) is not None:
        return p
    bk = min(cfg.bk, g) if cfg.join else _fit_bk(max(16, cfg.bk), k, g)
    return _plan(
        key, _gemm_kernel, (triton.cdiv(m, cfg.bm) * triton.cdiv(n, cfg.bn),), (), cfg.num_warps,
        cfg.num_stages, False, False, G=g, HAS_BIAS=has_bias, BM=cfg.bm, BN=cfg.bn, BK=bk,
        GROUP_M=cfg.group_m, JOIN=cfg.join, UPCAST=dtype == torch.bfloat16 and interpreting(),
    )  # fmt: skip


def plan_mma(m: int, n: int, k: int, g: int, dtype: torch.dtype, has_bias: bool, cfg: TileConfig) -> Plan:
    key = ("mma", m, n, k, g, dtype, has_bias, cfg)
    if (p := _PLANS.get(key)) is not None:
        return p
    kg = k // g
    ng = _groups_per_step(cfg.bk, k, g)
    split = max(1, min(cfg.split, kg // ng))
    while kg % (split * ng):
        split -= 1
    asm = 0 if not cfg.join or interpreting() else 2 if cfg.words else 1
    return _plan(
        key, _mma_kernel, (triton.cdiv(n, cfg.bn), triton.cdiv(m, cfg.bm), split), (kg // split,),
        cfg.num_warps, cfg.num_stages, split > 1, False, G=g, HAS_BIAS=has_bias, BM=cfg.bm, BN=cfg.bn, NG=ng,
        ATOMIC=split > 1, ASM=asm, UPCAST=dtype == torch.bfloat16 and interpreting(),
        DEQ=cfg.deq and dtype == torch.float16, SZ=cfg.sz_ahead,
    )  # fmt: skip


def _planned(
    planner: Callable[[int, int, int, int, torch.dtype, bool, TileConfig], Plan],
    default: Callable[[int, int, int, int], TileConfig],
    check: Callable[[torch.Tensor, dict[str, torch.Tensor], int], tuple[int, int, int]],
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: TileConfig | None,
) -> torch.Tensor:  # fmt: skip
    """A kernel's entry point: check the call, take ``config`` (or the default tiles for its shape) and
    run the plan ``planner`` makes of it."""
    m, n, k = check(x2d, w, group_size)
    cfg = config or default(m, n, k, group_size)
    return _execute(planner(m, n, k, group_size, x2d.dtype, bias is not None, cfg), x2d, w, bias)


def gemv(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: TileConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    return _planned(plan_gemv, gemv_config, _check, x2d, w, group_size, bias, config)


def gemm(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: TileConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    return _planned(plan_gemm, gemm_config, _check, x2d, w, group_size, bias, config)


def mma(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: TileConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    return _planned(plan_mma, mma_config, _check, x2d, w, group_size, bias, config)


def dequantize(
    w: dict[str, torch.Tensor], group_size: int, dtype: torch.dtype, bn: int = 32, bk: int = 512, num_warps: int = 4
) -> torch.Tensor:
    """The full weight [N, K] in ``dtype`` (nn.Linear orientation); tiles from the H100 sweep in BENCHMARKS.md."""
    n, kw = w["qweight_nk"].shape
    k = kw * 8
    bk = _fit_bk(bk, k, group_size)
    out = torch.empty(n, k, device=w["qweight_nk"].device, dtype=dtype)
    grid = (triton.cdiv(n, bn), k // bk)
    _dequant_kernel[grid](w["qweight_nk"], w["sz_gn"], out, n, k, G=group_size, BN=bn, BK=bk, num_warps=num_warps)
    return out


def dequant_matmul(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], group_size: int, bias: torch.Tensor | None,
    config: TileConfig | None = None,
) -> torch.Tensor:  # fmt: skip
    _check(x2d, w, group_size)
    weight = dequantize(w, group_size, x2d.dtype)
    return torch.nn.functional.linear(x2d, weight, bias.to(x2d.dtype) if bias is not None else None)


# ---------------------------------------------------------------------------------------------- tuning
#
# The best kernel and tile shape depend on the card, M, N, K and the group size. The first call for a
# (device, dtype, M bucket, N, K, G) times a short list of candidates on the real inputs with a cold L2
# and keeps the fastest for the process. While a CUDA graph is being captured, under the interpreter,
# or with FASTAWQ_TUNE=0, the untuned defaults run instead.


class Described(Protocol):
    """A tile configuration (Triton's :class:`TileConfig`, the CUDA kernel's ``CudaConfig``)."""

    def describe(self) -> str: ...


Candidate = tuple[str, "Described | None"]
#: what a tuned candidate runs: a Triton launch plan, any other compiled launch (called with x, the layout
#: tensors and the bias), or None for dequantize + cuBLAS
Launch: TypeAlias = Plan | Callable[[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None], torch.Tensor] | None
#: per tuned key: [(kernel, config, microseconds)] as measured, for benchmarks and debugging
TUNE_LOG: dict[tuple[object, ...], list[tuple[str, str, float]]] = {}


def _bucket(m: int) -> int:
    return 1 << max(0, (m - 1).bit_length())


def candidates(m: int, n: int, k: int, group_size: int, dtype: torch.dtype = torch.float16) -> list[Candidate]:
    """What the tuner times for this shape: the fastest configs of the H100 sweeps in BENCHMARKS.md."""
    out: list[Candidate] = []
    bk = max(128, group_size)
    fp16 = dtype == torch.float16
    if m <= 64:  # tensor cores, W·xᵀ (the H100 sweeps "mma" and "pipeline" in BENCHMARKS.md)
        bm = max(16, _bucket(m))
        # (bn, split, warps, stages, deq, sz_ahead, words): loads left to Triton's
        # pipeline (sz_ahead 0/1) won most shapes; the older two-ahead prefetch some small ones
        tiles = [
            (64, 4, 4, 3, False, 0, False), (64, 4, 4, 3, True, 0, False), (128, 8, 4, 3, False, 0, False),
            (128, 8, 4, 3, True, 0, False), (64, 4, 4, 3, True, 1, True), (128, 8, 4, 3, True, 2, False),
        ]  # fmt: skip
        if m > 32:
            tiles += [(128, 4, 8, 4, True, 0, True), (64, 4, 4, 3, True, 0, True)]
        for bn, split, warps, stages, d, sz, words in tiles:  # bf16: the same tiles without deq
            cfg = TileConfig(bm, bn, bk, warps, stages, split=split, deq=d and fp16, sz_ahead=sz, words=words)
            if ("mma", cfg) not in out:
                out.append(("mma", cfg))
    elif m <= 256:
        tiles2 = [(128, 64, 4, 4, False, 0, False), (128, 64, 4, 4, True, 0, True), (128, 64, 4, 4, True, 1, True),
                  (64, 128, 4, 4, True, 2, False), (128, 128, 8, 2, True, 2, False)]  # fmt: skip
        for bm, bn, warps, split, d, sz, words in tiles2:
            cfg = TileConfig(bm, bn, bk, warps, 3, split=split, deq=d and fp16, sz_ahead=sz, words=words)
            if ("mma", cfg) not in out:
                out.append(("mma", cfg))
    if m == 2:  # the packed-pair GEMV is close to the tensor cores at batch 2, and ahead on some shapes
        for bn in (16, 32):
            out.append(("gemv", TileConfig(2, bn, 1024, 4, 2, pairs=True)))
    if m == 1:  # the CUDA-core kernels beat the tensor cores at batch 1
        for bn, step, warps, stages in ((8, 1024, 4, 3), (8, 1024, 8, 3), (8, 1024, 4, 4), (8, 512, 4, 4),
                                        (16, 1024, 4, 2)):  # fmt: skip
            out.append(("gemv", TileConfig(1, bn, step, warps, stages, pairs=True)))
        out.append(("gemv", TileConfig(1, 8, 1024, 4, 2, join=True)))
    if 64 < m <= 512:
        out.append(("gemm", TileConfig(128, 128, 128, 4, 2, join=True)))
    if m >= 32:
        out.append(("dequant", None))
    return out


def _default(m: int, n: int, k: int, group_size: int) -> Candidate:
    if m <= 64:
        return ("mma", mma_config(m, n, k, group_size))
    return ("dequant", None)


def _plan_of(c: Candidate, x2d: torch.Tensor, m: int, n: int, k: int, g: int, has_bias: bool) -> Plan | None:
    """The launch plan of a candidate (None: dequantize + cuBLAS)."""
    name, cfg = c
    if cfg is None:
        return None
    assert isinstance(cfg, TileConfig)
    make = {"gemv": plan_gemv, "gemm": plan_gemm, "mma": plan_mma}[name]
    return make(m, n, k, g, x2d.dtype, has_bias, cfg)


def _run(
    c: Candidate, x2d: torch.Tensor, w: dict[str, torch.Tensor], g: int, bias: torch.Tensor | None
) -> torch.Tensor:
    name, cfg = c
    if cfg is None:
        return dequant_matmul(x2d, w, g, bias)
    assert isinstance(cfg, TileConfig)
    return {"gemv": gemv, "gemm": gemm, "mma": mma}[name](x2d, w, g, bias, cfg)


def _tune(
    x2d: torch.Tensor, w: dict[str, torch.Tensor], g: int, bias: torch.Tensor | None, key: tuple[object, ...],
    cands: list[Candidate], run: Callable[..., torch.Tensor], fallback: Candidate,
) -> Candidate:  # fmt: skip
    """Time every candidate (cold L2, median of 7) and return the fastest.

    All candidates are compiled first, so no timing follows an idle stretch of compilation (the GPU's
    clocks drop while it waits); the timing then runs three times over the list and keeps each
    candidate's best median, which damps a passing slowdown of the card (two passes of five calls
    once kept a 36 % slower config on an H100: BENCHMARKS.md).
    """
    ready: list[Candidate] = []
    for c in cands:
        try:
            run(c, x2d, w, g, bias)  # compile + warm up
            ready.append(c)
        except Exception:  # a config the card cannot hold (shared memory, registers): not a candidate
            continue
    if not ready:
        return fallback
    flush = torch.empty(64 << 20, dtype=torch.uint8, device=x2d.device)
    start = [torch.cuda.Event(enable_timing=True) for _ in range(7)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(7)]
    times = [float("inf")] * len(ready)
    for _ in range(3):
        for j, c in enumerate(ready):
            for i in range(7):
                flush.view(torch.int32).max()  # cold L2, and clean: reading leaves no dirty lines behind
                torch.cuda._sleep(200_000)  # the GPU waits here while the launch below is enqueued
                start[i].record()
                run(c, x2d, w, g, bias)
                end[i].record()
            torch.cuda.synchronize(x2d.device)
            times[j] = min(times[j], sorted(s.elapsed_time(e) for s, e in zip(start, end))[3] * 1e3)
    del flush
    TUNE_LOG[key] = [(c[0], c[1].describe() if c[1] else "", us) for c, us in zip(ready, times)]
    return ready[min(range(len(ready)), key=times.__getitem__)]


_MISSING: Any = object()


@dataclass(eq=False)
class Tuner:
    """The tuned choice for one runtime layout: what to time, how to run and plan a candidate.

    ``__call__`` is the layout's ``auto`` kernel. A shape seen before goes straight to its plan; the
    plan key holds the input width and the scale/zero tensor's shape, so a hit was validated when it
    was made. The first call of a (device, dtype, M bucket, shape, G, bias?) tunes, except under the
    interpreter, with FASTAWQ_TUNE=0, off CUDA or while a CUDA graph is captured: then the untuned
    default runs and nothing is remembered (a later call may tune).
    """

    layout: str
    check: Callable[[torch.Tensor, dict[str, torch.Tensor], int], tuple[int, int, int]]
    candidates: Callable[[int, int, int, int, torch.dtype], list[Candidate]]
    default: Callable[[int, int, int, int], Candidate]
    run: Callable[[Candidate, torch.Tensor, dict[str, torch.Tensor], int, torch.Tensor | None], torch.Tensor]
    plan_of: Callable[[Candidate, torch.Tensor, int, int, int, int, bool], Launch]
    dequant_matmul: Callable[[torch.Tensor, dict[str, torch.Tensor], int, torch.Tensor | None], torch.Tensor]
    #: the tuned candidate per :meth:`key`
    tuned: dict[tuple[object, ...], Candidate] = field(default_factory=dict)
    #: the tuned launch per (device, dtype, M, K, sz shape, G, bias?); None: dequantize + cuBLAS
    plans: dict[tuple[object, ...], Launch] = field(default_factory=dict)

    def key(self, x2d: torch.Tensor, n: int, k: int, g: int, bias: torch.Tensor | None) -> tuple[object, ...]:
        return (self.layout, x2d.device.index, x2d.dtype, _bucket(x2d.shape[0]), n, k, g, bias is not None)

    def choice(self, x2d: torch.Tensor, w: dict[str, torch.Tensor], g: int, bias: torch.Tensor | None) -> str:
        """What a call runs for this shape (after it has run once)."""
        m, n, k = self.check(x2d, w, g)
        c = self.tuned.get(self.key(x2d, n, k, g, bias)) or self.default(m, n, k, g)
        return f"{c[0]} {c[1].describe() if c[1] else ''}".strip()

    def __call__(
        self, x2d: torch.Tensor, w: dict[str, torch.Tensor], g: int, bias: torch.Tensor | None
    ) -> torch.Tensor:
        fast = (x2d.get_device(), x2d.dtype, x2d.shape[0], x2d.shape[1], w["sz_gn"].shape, g, bias is not None)
        p = self.plans.get(fast, _MISSING)
        if p is _MISSING:
            m, n, k = self.check(x2d, w, g)
            key = self.key(x2d, n, k, g, bias)
            c = self.tuned.get(key)
            if c is None:
                no_tune = (
                    interpreting()
                    or os.environ.get("FASTAWQ_TUNE", "1") == "0"
                    or x2d.device.type != "cuda"
                    or torch.cuda.is_current_stream_capturing()
                )
                if no_tune:
                    return self.run(self.default(m, n, k, g), x2d, w, g, bias)
                cands = self.candidates(m, n, k, g, x2d.dtype)
                c = self.tuned[key] = _tune(x2d, w, g, bias, key, cands, self.run, self.default(m, n, k, g))
            p = self.plans[fast] = self.plan_of(c, x2d, m, n, k, g, bias is not None)
        if p is None:
            return self.dequant_matmul(x2d, w, g, bias)
        if isinstance(p, Plan):
            return _execute(p, x2d, w, bias)
        y: torch.Tensor = p(x2d, w, bias)
        return y


NK_TUNER = Tuner(layouts.NK_INT4, _check, candidates, _default, _run, _plan_of, dequant_matmul)


def auto(x2d: torch.Tensor, w: dict[str, torch.Tensor], g: int, bias: torch.Tensor | None) -> torch.Tensor:
    """The tuned choice among GEMV, MMA, fused GEMM and dequantize + cuBLAS for this call's shape."""
    return NK_TUNER(x2d, w, g, bias)


def choice(x2d: torch.Tensor, w: dict[str, torch.Tensor], g: int, bias: torch.Tensor | None) -> str:
    """What :func:`auto` runs for this call (after it has run once)."""
    return NK_TUNER.choice(x2d, w, g, bias)
