"""quantize → save → load → the same logits, on tiny random models of each architecture."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fastawq import AutoAWQForCausalLM, AWQConfig, AWQLinear, load_quantized, quantize_model, save_quantized
from fastawq.format.awq_gemm import unpack_gemm

from conftest import TEXTS
from tiny_models import calib_ids, make_model

X = calib_ids(2, 40, seed=11)


def _fake_and_packed(arch: str, cfg: AWQConfig, tie: bool = False) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    base = make_model(arch, tie=tie)
    fake = copy.deepcopy(base)
    quantize_model(fake, calib_ids(), cfg, pack=False, progress=False)
    packed = copy.deepcopy(base)
    result = quantize_model(packed, calib_ids(), cfg, progress=False)
    return fake, packed, result


@pytest.mark.parametrize("arch", ["llama", "llama_mha", "mistral", "qwen2", "qwen3"])
def test_round_trip_logits_match_fake_quantized(arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAWQ_KERNEL", "reference")  # exact fp32 product; the fast kernels are checked below
    cfg = AWQConfig(group_size=32)
    fake, packed, result = _fake_and_packed(arch, cfg)
    out = save_quantized(packed, tmp_path / "ckpt", result, dtype=torch.float32)
    loaded, qcfg = load_quantized(out, dtype=torch.float32)
    assert qcfg == cfg
    assert sum(isinstance(m, AWQLinear) for m in loaded.modules()) == 7 * 2
    with torch.no_grad():
        ref = fake(X).logits
        got = loaded(X).logits
        mem = packed(X).logits
    torch.testing.assert_close(mem, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)

    # the automatic CPU choice (PyTorch's int4 kernel, bf16 compute) agrees to bf16 precision
    monkeypatch.delenv("FASTAWQ_KERNEL")
    with torch.no_grad():
        fast = loaded(X).logits
    assert {m.layout for m in loaded.modules() if isinstance(m, AWQLinear)} == {"cpu_int4pack"}
    rel = float((fast - ref).abs().max() / ref.abs().max())
    assert rel < 2e-2, rel


def test_fp16_checkpoint_and_dtypes(tmp_path: Path) -> None:
    cfg = AWQConfig(group_size=64)
    fake, packed, result = _fake_and_packed("llama", cfg, tie=True)
    out = save_quantized(packed, tmp_path / "ckpt", result)  # default: fp16 like AutoAWQ
    with torch.no_grad():
        ref = fake(X).logits
    for dtype, tol in ((torch.float32, 2e-2), (torch.bfloat16, 1.5e-1), (torch.float16, 3e-2)):
        loaded, _ = load_quantized(out, dtype=dtype)
        assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
        with torch.no_grad():
            got = loaded(X).logits.float()
        rel = float((got - ref).abs().max() / ref.abs().max())
        assert rel < tol, (dtype, rel)


def test_checkpoint_layout_and_config(tmp_path: Path) -> None:
    cfg = AWQConfig(group_size=32)
    _, packed, result = _fake_and_packed("qwen2", cfg)
    out = save_quantized(packed, tmp_path / "ckpt", result, max_shard_bytes=200_000)
    files = sorted(p.name for p in out.iterdir())
    assert "config.json" in files and "model.safetensors.index.json" in files and "fastawq_record.json" in files
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) > 1
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    conf = json.loads((out / "config.json").read_text())
    assert conf["quantization_config"] == {
        "quant_method": "awq",
        "bits": 4,
        "group_size": 32,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }
    name = "model.layers.0.self_attn.q_proj"
    shard = index["weight_map"][f"{name}.qweight"]
    with safe_open(str(out / shard), framework="pt") as fh:
        qweight, qzeros, scales = (fh.get_tensor(f"{name}.{k}") for k in ("qweight", "qzeros", "scales"))
        bias = fh.get_tensor(f"{name}.bias")
    assert qweight.dtype == torch.int32 and qweight.shape == (128, 128 // 8)
    assert qzeros.dtype == torch.int32 and qzeros.shape == (128 // 32, 128 // 8)
    assert scales.dtype == torch.float16 and scales.shape == (128 // 32, 128)
    assert bias.dtype == torch.float16 and bias.shape == (128,)
    assert int(unpack_gemm(qzeros).max()) <= 15
    record = json.loads((out / "fastawq_record.json").read_text())
    assert len(record["layers"]) == 2
    g0 = record["layers"][0]["groups"][0]
    assert g0["loss_awq"] <= g0["loss_rtn"]
    assert 0.0 <= g0["alpha"] < 1.0


def test_awq_beats_rtn_on_group_loss() -> None:
    _, _, result = _fake_and_packed("llama_mha", AWQConfig(group_size=32))
    groups = [g for r in result.records for g in r.groups]  # type: ignore[attr-defined]
    assert all(g["loss_awq"] <= g["loss_rtn"] for g in groups)
    assert sum(g["loss_awq"] for g in groups) < 0.95 * sum(g["loss_rtn"] for g in groups)


def test_symmetric_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAWQ_KERNEL", "reference")
    cfg = AWQConfig(group_size=32, zero_point=False)
    fake, packed, result = _fake_and_packed("llama", cfg)
    out = save_quantized(packed, tmp_path / "ckpt", result, dtype=torch.float32)
    loaded, qcfg = load_quantized(out, dtype=torch.float32)
    assert qcfg.zero_point is False
    assert bool((unpack_gemm(loaded.model.layers[0].mlp.up_proj.qzeros) == 8).all())
    with torch.no_grad():
        torch.testing.assert_close(loaded(X).logits, fake(X).logits, rtol=1e-4, atol=1e-4)


def test_autoawq_compatible_api(tmp_path: Path, char_tokenizer: object) -> None:
    src = tmp_path / "tiny-llama"
    make_model("llama").save_pretrained(src)
    char_tokenizer.save_pretrained(src)  # type: ignore[attr-defined]
    model = AutoAWQForCausalLM.from_pretrained(str(src), torch_dtype="float32")
    model.quantize(
        char_tokenizer,
        quant_config={"zero_point": True, "q_group_size": 64, "w_bit": 4, "version": "GEMM"},
        calib_data=TEXTS,
        max_calib_samples=32,
        max_calib_seq_len=128,
    )
    assert model.quant_config["group_size"] == 64
    out = tmp_path / "tiny-llama-awq"
    model.save_quantized(str(out))
    char_tokenizer.save_pretrained(str(out))  # type: ignore[attr-defined]
    q = AutoAWQForCausalLM.from_quantized(str(out), torch_dtype="float32")  # on the GPU when there is one
    device = next(q.model.parameters()).device
    inputs = char_tokenizer("the quick", return_tensors="pt").to(device)  # type: ignore[operator]
    gen = q.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert gen.shape == (1, inputs["input_ids"].shape[1] + 5)
    with torch.no_grad():
        torch.testing.assert_close(q(X.to(device)).logits.cpu(), model(X).logits, rtol=2e-2, atol=2e-2)
