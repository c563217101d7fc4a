"""AWQ GEMM packing against an independent, slow reference written from the format description."""

from __future__ import annotations

import pytest
import torch

from fastawq.format.awq_gemm import AWQ_ORDER, dequantize_gemm, pack_gemm, unpack_gemm

# nibble i of word j holds column 8j + ORDER[i] (awq-facts §1)
SPEC_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def slow_pack(codes: torch.Tensor) -> torch.Tensor:
    rows, cols = codes.shape
    out = torch.zeros(rows, cols // 8, dtype=torch.int32)
    for r in range(rows):
        for j in range(cols // 8):
            word = 0
            for i in range(8):
                word |= int(codes[r, 8 * j + SPEC_ORDER[i]]) << (4 * i)
            if word >= 2**31:
                word -= 2**32
            out[r, j] = word
    return out


def slow_unpack(packed: torch.Tensor) -> torch.Tensor:
    rows, words = packed.shape
    out = torch.zeros(rows, words * 8, dtype=torch.uint8)
    for r in range(rows):
        for j in range(words):
            word = int(packed[r, j]) & 0xFFFFFFFF
            for i in range(8):
                out[r, 8 * j + SPEC_ORDER[i]] = (word >> (4 * i)) & 0xF
    return out


def plain_pack(codes: torch.Tensor) -> torch.Tensor:
    """Sequential nibble order (column 8j+i in nibble i): the common mistake."""
    rows, cols = codes.shape
    c = codes.to(torch.int64).view(rows, cols // 8, 8)
    words = (c << torch.arange(0, 32, 4)).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def test_order_constant_matches_spec() -> None:
    assert list(AWQ_ORDER) == SPEC_ORDER


@pytest.mark.parametrize("shape", [(1, 8), (5, 16), (33, 64), (64, 24)])
def test_pack_matches_slow_reference(shape: tuple[int, int]) -> None:
    codes = torch.randint(0, 16, shape, dtype=torch.uint8)
    assert torch.equal(pack_gemm(codes), slow_pack(codes))


@pytest.mark.parametrize("shape", [(3, 2), (17, 5)])
def test_unpack_matches_slow_reference(shape: tuple[int, int]) -> None:
    packed = torch.randint(-(2**31), 2**31 - 1, shape, dtype=torch.int32)
    assert torch.equal(unpack_gemm(packed), slow_unpack(packed))


def test_round_trip_exact_all_values() -> None:
    codes = torch.randint(0, 16, (40, 96), dtype=torch.uint8)
    codes[0, :16] = torch.arange(16, dtype=torch.uint8)  # every value, incl. 15 in the sign nibble
    codes[1, :] = 15
    assert torch.equal(unpack_gemm(pack_gemm(codes)), codes)
    assert pack_gemm(codes).dtype == torch.int32


def test_plain_nibble_order_is_caught() -> None:
    codes = torch.randint(0, 16, (8, 32), dtype=torch.uint8)
    wrong = plain_pack(codes)
    assert not torch.equal(wrong, pack_gemm(codes))
    assert not torch.equal(unpack_gemm(wrong), codes)
    # a single word with distinct nibbles pins the order down exactly
    one = torch.arange(8, dtype=torch.uint8).view(1, 8)
    word = int(pack_gemm(one)[0, 0])
    assert [(word >> (4 * i)) & 0xF for i in range(8)] == SPEC_ORDER


def test_pack_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        pack_gemm(torch.full((2, 8), 16, dtype=torch.int64))
    with pytest.raises(ValueError):
        pack_gemm(torch.zeros(2, 7, dtype=torch.int64))


def test_dequantize_matches_formula_float64() -> None:
    k, n, g = 64, 24, 32
    q = torch.randint(0, 16, (k, n), dtype=torch.uint8)
    z = torch.randint(0, 16, (k // g, n), dtype=torch.uint8)
    s = (torch.rand(k // g, n) * 0.1 + 0.01).to(torch.float16)
    w = dequantize_gemm(pack_gemm(q), pack_gemm(z), s, g, dtype=torch.float32).double()
    ref = torch.empty(k, n, dtype=torch.float64)
    for kk in range(k):
        for nn_ in range(n):
            ref[kk, nn_] = (int(q[kk, nn_]) - int(z[kk // g, nn_])) * float(s[kk // g, nn_])
    torch.testing.assert_close(w, ref, rtol=1e-6, atol=1e-7)
