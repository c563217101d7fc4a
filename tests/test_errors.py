"""Bad input gets one clear error naming the problem and the fix; nothing is half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastawq import AWQConfig, FastAWQError, load_quantized, quantize, quantize_model, save_quantized
from fastawq.cli import main

from conftest import TEXTS
from tiny_models import calib_ids, make_model


def _cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ")
    assert "Traceback" not in err
    return err


def test_missing_model_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _cli_error(capsys, "quantize", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert "no such file or folder" in err


def test_unknown_architecture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    src = tmp_path / "weird"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "flux-capacitor", "architectures": ["FluxLM"]}))
    err = _cli_error(capsys, "quantize", str(src), str(tmp_path / "out"))
    assert "flux-capacitor" in err and "hint:" in err


def test_not_a_causal_lm(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from transformers import T5Config

    src = tmp_path / "t5"
    src.mkdir()
    T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, vocab_size=64).save_pretrained(src)
    err = _cli_error(capsys, "quantize", str(src), str(tmp_path / "out"))
    assert "t5" in err.lower() and "causal" in err


def test_no_decoder_layers_found() -> None:
    class NotATransformer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(64, 64)

    with pytest.raises(FastAWQError, match="no stack of decoder layers.*NotATransformer"):
        quantize_model(NotATransformer(), calib_ids(), AWQConfig(group_size=32), progress=False)


def _odd_model() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=320,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def test_group_size_not_dividing_names_layer_and_sizes() -> None:
    with pytest.raises(FastAWQError) as info:
        quantize_model(_odd_model(), calib_ids(), AWQConfig(group_size=64), progress=False)
    msg = str(info.value)
    assert "model.layers.0.self_attn.q_proj" in msg and "in_features=96" in msg
    assert "32" in msg and "skip_indivisible" in msg


def test_skip_indivisible_keeps_layers_and_lists_them(tmp_path: Path) -> None:
    model = _odd_model()
    result = quantize_model(model, calib_ids(), AWQConfig(group_size=64), skip_indivisible=True, progress=False)
    # hidden 96 is not divisible by 64 but intermediate 192 is: only down_proj is quantized
    assert result.quantized == [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    assert "model.layers.0.self_attn.q_proj" in (result.config.modules_to_not_convert or ())
    out = save_quantized(model, tmp_path / "ckpt", result, dtype=torch.float32)
    conf = json.loads((out / "config.json").read_text())
    assert "model.layers.1.mlp.gate_proj" in conf["quantization_config"]["modules_to_not_convert"]
    loaded, _ = load_quantized(out, dtype=torch.float32)
    x = calib_ids(1, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=1e-4, atol=1e-4)


def test_nan_weight_names_layer() -> None:
    model = make_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
    with pytest.raises(FastAWQError, match=r"model\.layers\.1\.mlp\.up_proj\.weight contains NaN"):
        quantize_model(model, calib_ids(), AWQConfig(group_size=32), progress=False)


def test_inf_activation_names_layer() -> None:
    model = make_model("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(1e38)  # finite weights, overflowing output
    with pytest.raises(FastAWQError, match=r"(?s)model\.layers\.0.*(NaN or Inf|not finite)"):
        quantize_model(model, calib_ids(), AWQConfig(group_size=32), progress=False)


def test_empty_and_too_short_calibration(char_tokenizer: object) -> None:
    model = make_model("llama")
    with pytest.raises(FastAWQError):
        quantize(model, char_tokenizer, {"q_group_size": 32}, calib_data=[], progress=False)
    with pytest.raises(FastAWQError, match="token"):
        quantize(
            model,
            char_tokenizer,
            {"q_group_size": 32},
            calib_data=TEXTS[:2],
            max_calib_seq_len=512,
            progress=False,
        )
    with pytest.raises(FastAWQError, match="non-empty"):
        quantize_model(model, torch.zeros(0, 8, dtype=torch.long), AWQConfig(group_size=32), progress=False)


def _tiny_dir(tmp_path: Path, tok: object) -> Path:
    src = tmp_path / "tiny"
    make_model("llama").save_pretrained(src)
    tok.save_pretrained(src)  # type: ignore[attr-defined]
    (tmp_path / "calib.txt").write_text("\n\n".join(TEXTS))
    return src


def test_existing_output_needs_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, char_tokenizer: object
) -> None:
    src = _tiny_dir(tmp_path, char_tokenizer)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    err = _cli_error(capsys, "quantize", str(src), str(out), "--calib", str(tmp_path / "calib.txt"))
    assert "already exists" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "precious"


def test_interrupted_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    model = make_model("llama")
    result = quantize_model(model, calib_ids(), AWQConfig(group_size=32), progress=False)
    out = tmp_path / "ckpt"
    calls = {"n": 0}
    real = safetensors.torch.save_file

    def dying_save(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_quantized(model, out, result, max_shard_bytes=100_000)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind
    # an existing checkpoint survives an interrupted overwrite untouched
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    save_quantized(model, out, result)
    before = sorted(p.name for p in out.iterdir())
    calls["n"] = 0
    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_quantized(model, out, result, max_shard_bytes=100_000, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_loading_bad_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(FastAWQError, match="no such folder"):
        load_quantized(tmp_path / "missing")
    plain = tmp_path / "plain"
    make_model("llama").save_pretrained(plain)
    with pytest.raises(FastAWQError, match="not an AWQ checkpoint"):
        load_quantized(plain)
    model = make_model("llama")
    result = quantize_model(model, calib_ids(), AWQConfig(group_size=32), progress=False)
    out = save_quantized(model, tmp_path / "ckpt", result)
    conf = json.loads((out / "config.json").read_text())
    conf["quantization_config"]["group_size"] = 64  # lies about the layout
    (out / "config.json").write_text(json.dumps(conf))
    with pytest.raises(FastAWQError, match="unexpected shapes"):
        load_quantized(out)


def test_hub_id_offline_gives_one_clear_error(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "fastawq.cli", "quantize", "some-org/some-model", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "some-org/some-model" in proc.stderr and "hub" in proc.stderr
