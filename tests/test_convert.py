"""Checkpoint conversion (AWQ GEMM ↔ compressed-tensors ↔ GEMV) is exact; inspect finds broken tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fastawq import AWQConfig, load_quantized, quantize_model, save_quantized
from fastawq.cli import main
from fastawq.convert import convert_checkpoint
from fastawq.errors import FastAWQError
from fastawq.format.awq_gemm import pack_gemm, unpack_gemm
from fastawq.format.conversions import pack_seq
from fastawq.inspection import inspect_checkpoint

from tiny_models import calib_ids, make_model

X = calib_ids(2, 24, seed=3)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module", params=[True, False], ids=["asym", "sym"])
def ckpt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_model("qwen2")  # biases on q/k/v: they must survive conversion too
    cfg = AWQConfig(group_size=32, zero_point=request.param)
    result = quantize_model(model, calib_ids(), cfg, progress=False)
    return save_quantized(model, tmp_path_factory.mktemp("src") / "awq", result, dtype=torch.float32)


@pytest.mark.parametrize("via", ["compressed-tensors", "gemv"])
def test_round_trip_is_bit_exact(ckpt: Path, via: str, tmp_path: Path) -> None:
    mid = convert_checkpoint(ckpt, tmp_path / "mid", via)
    back = convert_checkpoint(mid, tmp_path / "back", "awq-gemm")
    a, b = _tensors(ckpt), _tensors(back)
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    qa = json.loads((ckpt / "config.json").read_text())["quantization_config"]
    qb = json.loads((back / "config.json").read_text())["quantization_config"]
    assert qa == qb


def test_compressed_tensors_layout_and_config(ckpt: Path, tmp_path: Path) -> None:
    out = convert_checkpoint(ckpt, tmp_path / "ct", "compressed-tensors")
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    src_q = json.loads((ckpt / "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "compressed-tensors" and q["format"] == "pack-quantized"
    w = q["config_groups"]["group_0"]["weights"]
    assert (w["num_bits"], w["type"], w["strategy"], w["group_size"]) == (4, "int", "group", 32)
    assert w["symmetric"] is (not src_q["zero_point"])
    assert "lm_head" in q["ignore"]
    t = _tensors(out)
    src = _tensors(ckpt)
    name = "model.layers.0.mlp.up_proj"
    n, k = src[f"{name}.scales"].shape[1], src[f"{name}.qweight"].shape[0]
    assert t[f"{name}.weight_packed"].shape == (n, k // 8) and t[f"{name}.weight_packed"].dtype == torch.int32
    assert t[f"{name}.weight_scale"].shape == (n, k // 32)
    assert t[f"{name}.weight_shape"].tolist() == [n, k]
    assert (f"{name}.weight_zero_point" in t) is src_q["zero_point"]
    if src_q["zero_point"]:
        assert t[f"{name}.weight_zero_point"].shape == ((n + 7) // 8, k // 32)
    # the nibbles are the AWQ codes in plain K order: signed value + 8 (compressed-tensors' offset)
    codes = unpack_gemm(src[f"{name}.qweight"]).t().contiguous()
    assert torch.equal(t[f"{name}.weight_packed"], pack_seq(codes))
    assert f"{name}.qweight" not in t and "model.layers.0.self_attn.q_proj.bias" in t


@pytest.mark.parametrize("fmt", ["compressed-tensors", "gemv"])
def test_converted_checkpoint_loads_with_equal_logits(
    ckpt: Path, fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTAWQ_KERNEL", "reference")
    out = convert_checkpoint(ckpt, tmp_path / fmt, fmt)
    ref, _ = load_quantized(ckpt, dtype=torch.float32)
    got, qcfg = load_quantized(out, dtype=torch.float32)
    assert qcfg.group_size == 32
    with torch.no_grad():
        assert torch.equal(ref(X).logits, got(X).logits)


def test_convert_errors(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(FastAWQError, match="already in the awq-gemm format"):
        convert_checkpoint(ckpt, tmp_path / "x", "awq-gemm")
    with pytest.raises(FastAWQError, match="unknown target format"):
        convert_checkpoint(ckpt, tmp_path / "x", "marlin")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    with pytest.raises(FastAWQError, match="already exists"):
        convert_checkpoint(ckpt, tmp_path / "busy", "gemv")
    assert not (tmp_path / "x").exists()


def test_cli_convert_and_inspect(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(ckpt), str(tmp_path / "ct"), "--to", "compressed-tensors"]) == 0
    assert main(["inspect", str(tmp_path / "ct")]) == 0
    text = capsys.readouterr().out
    assert "compressed-tensors" in text and "all tensors valid" in text
    assert main(["inspect", str(ckpt), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["format"] == "awq-gemm" and rep["quantized_layers"] == 14 and rep["problems"] == []


# ----------------------------------------------------------------------------------------------- inspect


def _tamper(src: Path, dst: Path, edit: object) -> Path:
    import shutil

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        t = load_file(str(f))
        edit(t)  # type: ignore[operator]
        save_file(t, str(f), metadata={"format": "pt"})
    return dst


def _problems(path: Path) -> list[str]:
    return inspect_checkpoint(path).problems


def test_inspect_catches_wrong_dtype_shape_and_missing_scales(ckpt: Path, tmp_path: Path) -> None:
    name = "model.layers.0.mlp.up_proj"

    def fp32_scales(t: dict[str, torch.Tensor]) -> None:
        t[f"{name}.scales"] = t[f"{name}.scales"].float()

    def short_zeros(t: dict[str, torch.Tensor]) -> None:
        t[f"{name}.qzeros"] = t[f"{name}.qzeros"][:-1]

    def no_scales(t: dict[str, torch.Tensor]) -> None:
        del t[f"{name}.scales"]

    def negative_scale(t: dict[str, torch.Tensor]) -> None:
        t[f"{name}.scales"][0, 0] = -t[f"{name}.scales"][0, 0]

    assert any("float32, must be torch.float16" in p for p in _problems(_tamper(ckpt, tmp_path / "a", fp32_scales)))
    assert any("shapes disagree" in p for p in _problems(_tamper(ckpt, tmp_path / "b", short_zeros)))
    assert any("incomplete" in p and "scales" in p for p in _problems(_tamper(ckpt, tmp_path / "c", no_scales)))
    assert any("zero or negative" in p for p in _problems(_tamper(ckpt, tmp_path / "d", negative_scale)))


def test_inspect_catches_zero_points_of_a_symmetric_checkpoint(ckpt: Path, tmp_path: Path) -> None:
    if json.loads((ckpt / "config.json").read_text())["quantization_config"]["zero_point"]:
        pytest.skip("asymmetric checkpoint")
    name = "model.layers.1.self_attn.o_proj"

    def shift(t: dict[str, torch.Tensor]) -> None:
        z = unpack_gemm(t[f"{name}.qzeros"])
        t[f"{name}.qzeros"] = pack_gemm((z - 1).contiguous())  # a GPTQ-style −1 offset

    assert any("not 8" in p for p in _problems(_tamper(ckpt, tmp_path / "z", shift)))


def test_inspect_detects_plain_nibble_order(tmp_path: Path) -> None:
    """Codes packed 0..7 instead of AWQ's interleave.

    Weights like real ones: centred on 0, with tails whose lengths differ per output column (so the
    zero points differ between columns, as they do in real checkpoints).
    """
    from fastawq.algo.quant import quantize_weight
    from fastawq.checkpoint import save_checkpoint
    from fastawq.nn.qlinear import AWQLinear
    from fastawq.pipeline import _set_module

    model = make_model("llama")
    gen = torch.Generator().manual_seed(0)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.Linear) and ".layers." in name:
            x = torch.randn(mod.weight.shape, generator=gen)
            pos, neg = (torch.rand(mod.weight.shape[0], 1, generator=gen) * 1.7 + 0.3 for _ in range(2))
            w = torch.where(x > 0, pos * x, neg * x)
            _set_module(model, name, AWQLinear.from_quantized(quantize_weight(w, group_size=32), None))
    good = save_checkpoint(model, tmp_path / "good", AWQConfig(group_size=32))
    assert _problems(good) == []

    def plain_order(t: dict[str, torch.Tensor]) -> None:
        for key in [k for k in t if k.endswith(".qweight")]:
            t[key] = pack_seq(unpack_gemm(t[key]))

    bad = _problems(_tamper(good, tmp_path / "bad", plain_order))
    assert bad and all("nibble order looks wrong" in p for p in bad)


def test_checkpoint_has_a_model_card(ckpt: Path, tmp_path: Path) -> None:
    card = (ckpt / "README.md").read_text()
    q = json.loads((ckpt / "config.json").read_text())["quantization_config"]
    assert card.startswith("---\n") and "AWQ" in card
    assert f"group size {q['group_size']}" in card
    assert ("asymmetric" in card) is q["zero_point"]
    assert 'LLM(model="awq", quantization="awq")' in card and "AutoModelForCausalLM.from_pretrained" in card
    assert "tokens)" in card  # calibration size from the record
    # the card travels with a conversion
    out = convert_checkpoint(ckpt, tmp_path / "ct", "compressed-tensors")
    assert (out / "README.md").read_text() == card


def test_card_states_measured_perplexity(tmp_path: Path) -> None:
    from fastawq.model_card import write_card

    model = make_model("llama")
    result = quantize_model(model, calib_ids(), AWQConfig(group_size=32), progress=False)
    out = save_quantized(model, tmp_path / "m", result, card={"base_model": "org/tiny", "calibration": "unit texts"})
    card = (out / "README.md").read_text()
    assert "base_model: org/tiny" in card and "unit texts" in card and "Not measured" in card
    write_card(out, result.config, base_model="org/tiny", perplexity={"fp32": 10.0, "AWQ": 10.5})
    card = (out / "README.md").read_text()
    assert "| AWQ | 10.500 |" in card and "Not measured" not in card


def test_every_format_counts_as_a_quantized_checkpoint(ckpt: Path, tmp_path: Path) -> None:
    from fastawq.convert import is_quantized_checkpoint

    assert is_quantized_checkpoint(ckpt)
    for fmt in ("compressed-tensors", "gemv"):
        assert is_quantized_checkpoint(convert_checkpoint(ckpt, tmp_path / fmt, fmt))
    full = tmp_path / "full"
    make_model("llama").save_pretrained(full)
    assert not is_quantized_checkpoint(full) and not is_quantized_checkpoint(tmp_path / "missing")
