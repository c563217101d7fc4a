from __future__ import annotations

import pytest

from fastawq import AWQConfig, FastAWQError, Layout


def test_round_trip_default_and_custom() -> None:
    for cfg in (
        AWQConfig(),
        AWQConfig(group_size=64, zero_point=False, modules_to_not_convert=("visual", "lm_head")),
        AWQConfig.from_dict({"bits": 4, "group_size": 32, "version": "gemm", "custom_key": [1, 2]}),
    ):
        assert AWQConfig.from_dict(cfg.to_dict()) == cfg


def test_autoawq_keys_accepted() -> None:
    cfg = AWQConfig.from_dict({"zero_point": True, "q_group_size": 64, "w_bit": 4, "version": "GEMM"})
    assert cfg == AWQConfig(group_size=64)
    d = cfg.to_dict()
    assert d == {
        "quant_method": "awq",
        "bits": 4,
        "group_size": 64,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }
    assert cfg.version is Layout.GEMM


def test_conflicting_and_bad_values() -> None:
    with pytest.raises(FastAWQError, match="both"):
        AWQConfig.from_dict({"bits": 4, "w_bit": 8})
    with pytest.raises(FastAWQError, match="w_bit=3"):
        AWQConfig(bits=3)
    with pytest.raises(FastAWQError, match="group size 100"):
        AWQConfig(group_size=100)
    with pytest.raises(FastAWQError, match="unknown AWQ version"):
        AWQConfig.from_dict({"version": "marlin2"})
    with pytest.raises(FastAWQError, match="quant_method"):
        AWQConfig.from_dict({"quant_method": "gptq"})


def test_skip_matching_is_substring() -> None:
    cfg = AWQConfig(modules_to_not_convert=("mlp.down_proj",))
    assert cfg.skips("model.layers.3.mlp.down_proj")
    assert not cfg.skips("model.layers.3.mlp.up_proj")
    assert cfg.with_not_converted(["a", "mlp.down_proj"]).modules_to_not_convert == ("mlp.down_proj", "a")
