"""``fastawq report``: PNG + HTML from the per-layer record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastawq import AWQConfig, quantize_model, save_quantized
from fastawq.cli import main
from fastawq.report import layer_table

from tiny_models import calib_ids, make_model

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = make_model("llama_mha")  # multi-head attention: four scaling groups per layer (v→o too)
    result = quantize_model(model, calib_ids(), AWQConfig(group_size=32), progress=False)
    return save_quantized(model, tmp_path_factory.mktemp("r") / "ckpt", result)


def test_report_writes_png_and_html(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(ckpt)]) == 0
    png, page = ckpt / "report.png", ckpt / "report.html"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    text = page.read_text()
    assert "data:image/png;base64," in text
    record = json.loads((ckpt / "fastawq_record.json").read_text())
    assert text.count("<tr><td>") == len(record["layers"])
    assert "report.png" in capsys.readouterr().out


def test_layer_table_matches_the_record(ckpt: Path) -> None:
    record = json.loads((ckpt / "fastawq_record.json").read_text())
    rows = layer_table(record)
    assert [r["layer"] for r in rows] == [layer["index"] for layer in record["layers"]]
    for row, layer in zip(rows, record["layers"]):
        assert row["loss_awq"] == pytest.approx(sum(g["loss_awq"] for g in layer["groups"]))
        assert row["loss_awq"] <= row["loss_rtn"]  # the search never picks worse than α = 0
        assert len(row["alphas"]) == 4 and all(0.0 <= a <= 1.0 for a in row["alphas"].values())


def test_report_without_record_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "fastawq_record.json" in err and "Traceback" not in err
