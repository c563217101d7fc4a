"""The inline PTX of the packed-pair GEMV, run on CPU by a small PTX interpreter.

The GPU kernels need a GPU to run their asm, so CI checks the bit logic instead: ``run_ptx`` executes
a sequence (the strings of ``fastawq.kernels.triton_awq``) on numpy arrays, one asm instance per
element, with the exact semantics of the few instructions used. Floating-point lanes are computed
exactly in float64 (asserted) and rounded once to nearest-even, as the hardware does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

triton_awq = pytest.importorskip("fastawq.kernels.triton_awq")

U = npt.NDArray[Any]  # uint64: a 32-bit register per asm instance (16-bit registers: the low half)
F = npt.NDArray[Any]  # float64
M32 = 0xFFFFFFFF
U_RND = {"f16": 2.0**-11, "bf16": 2.0**-8}  # unit roundoff
TINY = {"f16": 2.0**-25, "bf16": 2.0**-134}  # largest rounding error among subnormals


# ----------------------------------------------------------------------------------- 16-bit lanes
def f16_val(h: U) -> F:
    return (h & 0xFFFF).astype(np.uint16).view(np.float16).astype(np.float64)


def bf16_val(h: U) -> F:
    return ((h & 0xFFFF) << 16).astype(np.uint32).view(np.float32).astype(np.float64)


def f16_bits(v: F) -> U:
    return np.asarray(v, np.float64).astype(np.float16).view(np.uint16).astype(np.uint64)  # numpy: one RNE


def bf16_bits(v: F) -> U:
    """Round to nearest-even at bf16 precision directly from float64 bits (no double rounding)."""
    b = np.asarray(v, np.float64).view(np.uint64)
    keep = np.uint64((2**64 - 1) ^ (2**45 - 1))  # float64 keeps 52 fraction bits, bf16 7: drop 45
    f = ((b + np.uint64(2**44 - 1) + ((b >> np.uint64(45)) & np.uint64(1))) & keep).view(np.float64)
    assert np.all((f == 0) | ((np.abs(f) >= 2.0**-126) & (np.abs(f) < 2.0**128))), "bf16 subnormal or overflow"
    return np.asarray(f.astype(np.float32).view(np.uint32) >> 16, np.uint64)


LANE: dict[str, tuple[Callable[[U], F], Callable[[F], U]]] = {"f16": (f16_val, f16_bits), "bf16": (bf16_val, bf16_bits)}


def exact_sum(a: F, b: F) -> F:
    s = a + b
    bb = s - a
    assert np.all((a - (s - bb)) + (b - bb) == 0), "float64 sum is not exact: emulation would round twice"
    return s


# products of 16-bit floats are exact in float64 (at most 2 x 11 significant bits, no underflow)
FLOAT_OPS: dict[str, Callable[..., F]] = {
    "fma": lambda a, b, c: exact_sum(a * b, c),
    "mul": lambda a, b: a * b,
    "add": exact_sum,
    "sub": lambda a, b: exact_sum(a, -b),
}


def f32(r: U) -> npt.NDArray[np.float32]:
    return r.astype(np.uint32).view(np.float32)


# ------------------------------------------------------------------------------------ interpreter
def run_ptx(asm: str, n_out: int, *inputs: Any) -> list[U]:
    """Outputs $0…$n_out-1 of ``asm`` with inputs $n_out… (int32 bit patterns, broadcast together)."""
    body = asm.strip()
    assert body[0] == "{" and body[-1] == "}"
    shape = np.broadcast_shapes(*(np.shape(x) for x in inputs))
    regs: dict[str, U] = {}
    ins = {f"${n_out + i}": np.broadcast_to(np.asarray(x, np.uint64) & M32, shape) for i, x in enumerate(inputs)}
    declared = {f"${i}" for i in range(n_out)}

    def get(a: str) -> U:
        if a in regs or a in ins:
            return regs[a] if a in regs else ins[a]
        assert a not in declared and not a.startswith("$") and re.fullmatch(r"0x[0-9a-fA-F]+|\d+", a), f"read {a}"
        return np.full(shape, int(a, 0) & M32, np.uint64)

    def put(d: str, v: U) -> None:
        assert d in declared, f"write to {d}: undeclared register or an input operand"
        regs[d] = v & M32

    for stmt in body[1:-1].split(";"):
        op, _, rest = stmt.strip().partition(" ")
        args = re.findall(r"\{[^}]*\}|[^,\s]+", rest)
        if not op:
            continue
        if op == ".reg":
            assert "<" not in rest
            declared.update(args[1:])
            continue
        parts = op.split(".")
        d, src = args[0], [get(a) for a in args[1:]]
        if op == "mov.b32" and d.startswith("{"):  # unpack: low half first
            lo, hi = re.findall(r"[\w$]+", d)
            put(lo, src[0] & 0xFFFF)
            put(hi, src[0] >> 16)
        elif op == "mov.b32":
            put(d, src[0])
        elif op in ("shr.b32", "shl.b32"):
            assert np.all(src[1] < 32)
            put(d, src[0] >> src[1] if op == "shr.b32" else src[0] << src[1])
        elif op == "and.b32":
            put(d, src[0] & src[1])
        elif op == "prmt.b32":  # default mode: nibble i of c picks byte i of the result from {b, a}
            a, b, c = src
            assert not np.any(c & 0x8888), "sign-replicate bit used"
            ab = (b << 32) | a
            put(d, sum((((ab >> (8 * ((c >> (4 * i)) & 7))) & 0xFF) << (8 * i) for i in range(4)), np.zeros_like(a)))
        elif op == "lop3.b32":
            a, b, c, lut = src
            r = np.zeros_like(a)
            for i in range(8):
                term = (a if i & 4 else ~a) & (b if i & 2 else ~b) & (c if i & 1 else ~c)
                r |= np.where((lut >> i) & 1 == 1, term, np.uint64(0))
            put(d, r)
        elif parts[-1] in ("f16x2", "bf16x2"):
            assert set(parts[1:-1]) <= {"rn"}, op
            val, bits = LANE[parts[-1][:-2]]
            fn = FLOAT_OPS[parts[0]]
            put(d, bits(fn(*(val(x) for x in src))) | (bits(fn(*(val(x >> 16) for x in src))) << 16))
        elif op == "cvt.f32.f16":
            put(d, f16_val(src[0]).astype(np.float32).view(np.uint32).astype(np.uint64))
        elif op == "add.f32":
            put(d, (f32(src[0]) + f32(src[1])).view(np.uint32).astype(np.uint64))
        else:
            raise NotImplementedError(op)
    return [regs[f"${i}"] for i in range(n_out)]  # KeyError: an output never written


# ------------------------------------------------------------------------------------------ tests
ASM = {
    "f16": (triton_awq._ASM_PAIRS_F16.value, triton_awq._ASM_DOT_F16.value, 0x6400, 64.0),
    "bf16": (triton_awq._ASM_PAIRS_BF16.value, triton_awq._ASM_DOT_BF16.value, 0x4300, 1.0),
}


def pack(lo: F, hi: F, fmt: str) -> U:
    bits = LANE[fmt][1]
    return np.asarray(bits(lo) | (bits(hi) << 16))


def zero_pair(z: npt.NDArray[np.int64], magic: int) -> U:
    """``_pairs``' second operand: the pair -(magic + z), as the kernel computes it (int32, wrapped)."""
    return (((magic + z) | 0x8000) * 0x10001 & M32).astype(np.uint64)


def codes(w: U) -> list[F]:
    return [((w >> (4 * j)) & 0xF).astype(np.float64) for j in range(8)]


def random_x(rng: np.random.Generator, shape: tuple[int, ...], fmt: str) -> F:
    """Normal values over a few octaves, rounded to ``fmt``."""
    val, bits = LANE[fmt]
    return val(bits(rng.standard_normal(shape) * np.exp2(rng.uniform(-3, 3, shape))))


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
def test_pairs_decode_every_byte_and_zero_point(fmt: str) -> None:
    rng = np.random.default_rng(1)
    asm, _, magic, _ = ASM[fmt]
    pos, byte, z = (g.ravel() for g in np.meshgrid(np.arange(4), np.arange(256), np.arange(16), indexing="ij"))
    w = rng.integers(0, 2**32, pos.size, dtype=np.uint64)
    sh = (8 * pos).astype(np.uint64)
    w = w - (w & (np.uint64(0xFF) << sh)) + (byte.astype(np.uint64) << sh)
    out = run_ptx(asm, 4, w, zero_pair(z, magic))
    c = codes(w)
    for j in range(4):  # pair j = inputs (8w + 2j, 8w + 2j + 1), low lane first
        np.testing.assert_array_equal(out[j], pack(c[2 * j] - z, c[2 * j + 1] - z, fmt), err_msg=f"pair {j}")


def test_x64_divides_each_fp16_lane_by_64() -> None:
    rng = np.random.default_rng(2)
    lo = np.arange(1 << 16, dtype=np.uint64)
    lo = lo[(lo & 0x7C00) != 0x7C00]  # every finite fp16, signed zeros and subnormals included
    hi = rng.permutation(lo)
    (out,) = run_ptx(triton_awq._ASM_X64_F16.value, 1, lo | (hi << 16))
    np.testing.assert_array_equal(out, pack(f16_val(lo) / 64, f16_val(hi) / 64, "f16"))
    normal = np.abs(f16_val(lo)) >= 2.0**-8  # x / 64 still normal: exact
    np.testing.assert_array_equal(f16_val(out)[normal] * 64, f16_val(lo)[normal])


def dot_bound(p: F, xs: F, ref: F, fmt: str) -> F:
    """|error| bound of the asm dot: each lane sums 4 products with 4 roundings in fmt (γ4 · Σ|products|,
    plus subnormal absolute errors), then one fp32 add (2**-24 relative, doubled for slack)."""
    u = U_RND[fmt]
    g4 = 4 * u / (1 - 4 * u)
    s = np.abs(p * xs).sum(axis=0)
    return np.asarray(g4 * s + 8 * TINY[fmt] + 2.0**-23 * (np.abs(ref) + g4 * s))


def dot_case(fmt: str, seed: int, n: int = 20000) -> tuple[F, F, list[U], list[U]]:
    """Random weight pairs (exact q - z) and x pairs (fp16: pre-scaled by 1/64), as values and words."""
    rng = np.random.default_rng(seed)
    val, bits = LANE[fmt]
    p = rng.integers(-15, 16, (8, n)).astype(np.float64)
    xs = val(bits(random_x(rng, (8, n), fmt) / ASM[fmt][3]))
    pw = [pack(p[2 * j], p[2 * j + 1], fmt) for j in range(4)]
    xw = [pack(xs[2 * j], xs[2 * j + 1], fmt) for j in range(4)]
    return p, xs, pw, xw


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
def test_pair_dot_matches_float64_within_16bit_accumulation(fmt: str) -> None:
    p, xs, pw, xw = dot_case(fmt, 3)
    (out,) = run_ptx(ASM[fmt][1], 1, *pw, *xw)
    d = f32(out).astype(np.float64)
    ref = (p * xs).sum(axis=0)
    bound = dot_bound(p, xs, ref, fmt)
    assert np.all(np.isfinite(d))
    bad = np.abs(d - ref) > bound
    assert not bad.any(), f"{bad.sum()} trials, worst excess {np.max(np.abs(d - ref) - bound)}"
    # the check is sharp enough to catch a wrong pairing: x lanes swapped, or x words rotated
    swapped = [((x & 0xFFFF) << 16) | (x >> 16) for x in xw]
    for wrong in (swapped, xw[1:] + xw[:1]):
        (o,) = run_ptx(ASM[fmt][1], 1, *pw, *wrong)
        assert np.mean(o != out) > 0.9
        assert np.mean(np.abs(f32(o).astype(np.float64) - ref) > bound) > 0.9


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
def test_pair_dot_bits_match_sequential_lane_model(fmt: str) -> None:
    """Bit-exact against a model written without the asm: per lane p0·x0 rounded, then three fused
    multiply-adds (one rounding each), then fp32 lo + hi. Catches 1-ulp slips the tolerance cannot;
    pins the accumulation order (update the model if the asm changes it on purpose)."""
    p, xs, pw, xw = dot_case(fmt, 5)
    val, bits = LANE[fmt]
    lanes = []
    for k in (0, 1):
        acc = val(bits(p[k] * xs[k]))
        for j in (1, 2, 3):
            acc = val(bits(exact_sum(p[2 * j + k] * xs[2 * j + k], acc)))
        lanes.append(acc.astype(np.float32))
    (out,) = run_ptx(ASM[fmt][1], 1, *pw, *xw)
    np.testing.assert_array_equal(out, (lanes[0] + lanes[1]).view(np.uint32))


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
def test_chain_as_gemv_pairs_kernel(fmt: str) -> None:
    """_pairs → _x_pairs (fp16: ×1/64) → _pair_dot, then × s·XS, as ``_gemv_pairs_kernel`` chains them."""
    rng = np.random.default_rng(4)
    pairs_asm, dot_asm, magic, xs_mul = ASM[fmt]
    val, bits = LANE[fmt]
    n = 20000
    w = rng.integers(0, 2**32, n, dtype=np.uint64)
    z = rng.integers(0, 16, n)
    s = val(bits(rng.uniform(1e-3, 5e-2, n)))
    x = random_x(rng, (n, 8), fmt)
    p = run_ptx(pairs_asm, 4, w, zero_pair(z, magic))
    xmem = bits(x).astype(np.uint16).view(np.uint32).astype(np.uint64)  # x read as int32 words (little-endian)
    xw = [xmem[:, j] for j in range(4)]
    if fmt == "f16":
        xw = [run_ptx(triton_awq._ASM_X64_F16.value, 1, xj)[0] for xj in xw]
    (d,) = run_ptx(dot_asm, 1, *p, *xw)
    y = f32(d).astype(np.float64) * (s * xs_mul)
    terms = s * np.stack([(c - z) * x[:, j] for j, c in enumerate(codes(w))])
    ref = terms.sum(axis=0)
    tol = 1e-2 if fmt == "f16" else 2e-2  # bounds: γ4 = 2.0e-3 (fp16), 1.6e-2 (bf16) of Σ|terms|
    rel = np.abs(y - ref) / np.abs(terms).sum(axis=0)
    assert np.max(rel) < tol, np.max(rel)


# ------------------------------------------------------------------- nk_frag (fastawq.kernels.triton_frag)
triton_frag = pytest.importorskip("fastawq.kernels.triton_frag")
FRAG_NIBBLE = (0, 4, 1, 5, 2, 6, 3, 7)  # layouts.FRAG_NIBBLE: value v of a word sits in this nibble


def frag_words(rng: np.random.Generator) -> tuple[U, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every value of every nibble against every zero point of rows g and g + 8, plus random words."""
    pos, nib, zl, zh = (g.ravel() for g in np.meshgrid(np.arange(8), np.arange(16), np.arange(16), [0, 7, 15]))
    w = rng.integers(0, 2**32, pos.size, dtype=np.uint64)
    sh = (4 * pos).astype(np.uint64)
    w = w - (w & (np.uint64(0xF) << sh)) + (nib.astype(np.uint64) << sh)
    return w, zl, zh


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
def test_frag_decode_gives_each_fragment_value(fmt: str) -> None:
    """The MMA decode: outputs a0…a7 (16-bit) = code in nibble FRAG_NIBBLE[v] minus the zero point of
    its row (v in 0, 1, 4, 5: row g; 2, 3, 6, 7: row g + 8)."""
    w, zl, zh = frag_words(np.random.default_rng(6))
    magic = ASM[fmt][2]
    asm = triton_frag._frag_asm(fmt == "f16", halves=True)
    out = run_ptx(asm, 8, w, zero_pair(zl, magic), zero_pair(zh, magic))
    c = codes(w)
    for v in range(8):
        z = zl if v in (0, 1, 4, 5) else zh
        np.testing.assert_array_equal(out[v], LANE[fmt][1](c[FRAG_NIBBLE[v]] - z), err_msg=f"a{v}")
    assert asm == (triton_frag._ASM_FRAG_F16 if fmt == "f16" else triton_frag._ASM_FRAG_BF16).value


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
def test_frag_pairs_are_the_decode_two_by_two(fmt: str) -> None:
    """The GEMV decode: pair i = (a2i, a2i+1) of the MMA decode, low lane first."""
    w, zl, zh = frag_words(np.random.default_rng(7))
    magic = ASM[fmt][2]
    zs = (zero_pair(zl, magic), zero_pair(zh, magic))
    halves = run_ptx(triton_frag._frag_asm(fmt == "f16", halves=True), 8, w, *zs)
    asm = (triton_frag._ASM_FPAIRS_F16 if fmt == "f16" else triton_frag._ASM_FPAIRS_BF16).value
    pairs = run_ptx(asm, 4, w, *zs)
    for i in range(4):
        np.testing.assert_array_equal(pairs[i], halves[2 * i] | (halves[2 * i + 1] << 16), err_msg=f"pair {i}")


@pytest.mark.parametrize("fmt", ["f16", "bf16"])
def test_frag_dot2_bits_match_sequential_lane_model(fmt: str) -> None:
    """pa·xa + pb·xb per lane (one rounding after the product, one after the fma), then fp32 lo + hi."""
    p, xs, pw, xw = dot_case(fmt, 8)
    val, bits = LANE[fmt]
    lanes = []
    for k in (0, 1):
        acc = val(bits(p[k] * xs[k]))
        acc = val(bits(exact_sum(p[2 + k] * xs[2 + k], acc)))
        lanes.append(acc.astype(np.float32))
    asm = (triton_frag._ASM_DOT2_F16 if fmt == "f16" else triton_frag._ASM_DOT2_BF16).value
    (out,) = run_ptx(asm, 1, pw[0], pw[1], xw[0], xw[1])
    np.testing.assert_array_equal(out, (lanes[0] + lanes[1]).view(np.uint32))
    ref = (p[:4] * xs[:4]).sum(axis=0)
    assert np.max(np.abs(f32(out).astype(np.float64) - ref) / np.abs(p[:4] * xs[:4]).sum(axis=0).clip(1e-30)) < 0.02
