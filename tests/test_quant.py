"""Properties of group-wise pseudo-quantization."""

from __future__ import annotations

import pytest
import torch

from fastawq.algo.quant import fake_quantize, quantize_weight


@pytest.mark.parametrize("group", [32, 64, 128])
def test_asymmetric_codes_range_and_reconstruction(group: int) -> None:
    w = torch.randn(48, 256, dtype=torch.float64).float()
    qw = quantize_weight(w, bits=4, group_size=group, zero_point=True)
    assert qw.codes.shape == (48, 256) and qw.scales.shape == (48, 256 // group)
    assert int(qw.codes.min()) >= 0 and int(qw.codes.max()) <= 15
    assert int(qw.zeros.min()) >= 0 and int(qw.zeros.max()) <= 15
    deq = qw.dequantize(torch.float64)
    # rounding error: half a step inside the range; the rounded zero point may cost the extremes
    # up to one step (the fp16 rounding of the scale adds a little)
    step = qw.scales.double().repeat_interleave(group, dim=1)
    err = (deq - w.double()).abs()
    assert bool((err <= step * (1 + 2e-2)).all())
    assert float((err <= 0.5 * step * (1 + 2e-2)).double().mean()) > 0.97
    # the group's min and max map to codes 0 and 15 (or within one)
    g = w.view(48, -1, group)
    lo = g.argmin(-1, keepdim=True)
    hi = g.argmax(-1, keepdim=True)
    codes = qw.codes.view(48, -1, group).long()
    assert int(codes.gather(-1, lo).max()) <= 1
    assert int(codes.gather(-1, hi).min()) >= 14


def test_asymmetric_matches_float64_formula() -> None:
    w = torch.randn(16, 64)
    g = 32
    wg = w.double().view(16, 2, g)
    mx, mn = wg.amax(-1, keepdim=True), wg.amin(-1, keepdim=True)
    s = ((mx - mn).clamp(min=1e-5) / 15).float().double()
    z = (-torch.round(mn / s)).clamp(0, 15)
    ref = ((torch.round(wg / s) + z).clamp(0, 15) - z) * s
    out = fake_quantize(w, bits=4, group_size=g, zero_point=True).double()
    torch.testing.assert_close(out, ref.view(16, 64).float().double(), rtol=1e-5, atol=1e-6)


def test_symmetric_zero_is_eight_and_range() -> None:
    w = torch.randn(8, 128)
    qw = quantize_weight(w, bits=4, group_size=64, zero_point=False)
    assert bool((qw.zeros == 8).all())
    signed = qw.codes.long() - 8
    assert int(signed.min()) >= -8 and int(signed.max()) <= 7
    # absmax maps to ±7
    g = w.view(8, 2, 64)
    idx = g.abs().argmax(-1, keepdim=True)
    assert bool((signed.view(8, 2, 64).gather(-1, idx).abs() == 7).all())
    deq = qw.dequantize()
    assert float((deq - w).abs().max()) <= float(qw.scales.float().max()) * 0.51


def test_groups_are_independent() -> None:
    w = torch.randn(4, 128)
    base = fake_quantize(w, group_size=64)
    w2 = w.clone()
    w2[:, 64:] *= 100.0  # change only the second group
    out = fake_quantize(w2, group_size=64)
    assert torch.equal(out[:, :64], base[:, :64])
    assert not torch.equal(out[:, 64:], base[:, 64:])


def test_constant_group_does_not_divide_by_zero() -> None:
    w = torch.zeros(2, 64)
    w[1] = 0.25
    qw = quantize_weight(w, group_size=32)
    assert torch.isfinite(qw.scales.float()).all()
    torch.testing.assert_close(qw.dequantize(), w, atol=1e-4, rtol=0)


def test_quantize_weight_equals_fake_quantize_up_to_scale_rounding() -> None:
    w = torch.randn(32, 256)
    qw = quantize_weight(w, group_size=128, scale_dtype=torch.float32)
    torch.testing.assert_close(qw.dequantize(), fake_quantize(w, group_size=128), rtol=1e-5, atol=1e-6)
