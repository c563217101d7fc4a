"""GPU-only checks (marked ``gpu``; skipped without CUDA). Run on an H100 with ``pytest -m gpu``."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from fastawq import AWQConfig, AWQLinear, load_quantized, quantize_model, save_quantized
from fastawq.algo.quant import quantize_weight

from tiny_models import calib_ids, make_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_quantize_on_gpu_in_half_precision_round_trips(dtype: torch.dtype, tmp_path: Path) -> None:
    base = make_model("llama_mha", dtype=dtype)
    fake = copy.deepcopy(base)
    quantize_model(fake, calib_ids(), AWQConfig(group_size=32), device="cuda", pack=False, progress=False)
    packed = copy.deepcopy(base)
    result = quantize_model(packed, calib_ids(), AWQConfig(group_size=32), device="cuda", progress=False)
    assert next(packed.parameters()).device.type == "cpu"  # layers go back where they were
    groups = {g["prev"] for r in result.records for g in r.groups}
    assert "self_attn.v_proj" in groups  # discovery runs in float32 even for half models
    out = save_quantized(packed, tmp_path / "ckpt", result)
    loaded, _ = load_quantized(out, device="cuda", dtype=dtype)
    x = calib_ids(2, 32, seed=5).cuda()
    with torch.no_grad():
        ref = fake.cuda()(x).logits.float()
        got = loaded(x).logits.float()
    rel = float((got - ref).abs().max() / ref.abs().max())
    assert rel < (2e-2 if dtype == torch.float16 else 6e-2), rel


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("m", [1, 7, 33])
def test_awq_linear_on_gpu_matches_float64(dtype: torch.dtype, m: int) -> None:
    torch.manual_seed(m)
    w = torch.randn(256, 512)
    qw = quantize_weight(w, group_size=64)
    lin = AWQLinear.from_quantized(qw, torch.randn(256)).cuda()
    x = torch.randn(m, 512)
    ref = x.double() @ qw.dequantize(torch.float64).t() + lin.bias.double().cpu()
    got = lin(x.cuda().to(dtype)).double().cpu()
    sqnr = 10 * torch.log10(ref.pow(2).mean() / (got - ref).pow(2).mean())
    assert float(sqnr) > (30 if dtype == torch.bfloat16 else 50), float(sqnr)


def test_tied_model_returns_to_cpu_after_gpu_quantization() -> None:
    model = make_model("llama", tie=True)
    quantize_model(model, calib_ids(), AWQConfig(group_size=32), device="cuda", progress=False)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    on_gpu = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type != "cpu"]
    assert on_gpu == []
