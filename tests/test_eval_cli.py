"""``fastawq eval``: several models side by side, RTN baseline, JSON output, BOS handling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fastawq import AWQConfig, quantize_model, save_quantized
from fastawq.cli import main
from fastawq.compare import eval_texts

from conftest import TEXTS
from tiny_models import calib_ids, make_model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    from conftest import make_char_tokenizer

    root = tmp_path_factory.mktemp("eval")
    tok = make_char_tokenizer()
    full = root / "full"
    model = make_model("llama")
    model.save_pretrained(full)
    tok.save_pretrained(full)
    result = quantize_model(model, calib_ids(), AWQConfig(group_size=32), progress=False)
    awq = save_quantized(model, root / "awq", result, tokenizer=tok)
    text = root / "heldout.txt"
    text.write_text("\n\n".join(TEXTS[20:]))
    return full, awq, text


def test_eval_table_and_json(
    models: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    full, awq, text = models
    out = tmp_path / "eval.json"
    argv = ["eval", str(full), str(awq), "--data", str(text), "--seq-len", "48", "--compare-rtn", "--group-size", "32"]
    assert main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    kinds = [r["kind"] for r in doc["rows"]]
    assert kinds == ["full precision (float32)", "RTN w4 g32 (in memory)", "awq-gemm w4 g32"]
    assert all(math.isfinite(r["ppl"]) and r["ppl"] > 1 and r["n_tokens"] > 100 for r in doc["rows"])
    assert len({r["n_tokens"] for r in doc["rows"]}) == 1  # same text, same windows for every model
    assert doc["rows"][0]["ppl"] != doc["rows"][1]["ppl"]
    for r in doc["rows"]:
        assert f"{r['ppl']:.3f}" in printed


def test_eval_bos_choice_changes_what_is_scored(models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    full, _, text = models
    counts = {}
    for bos in ("yes", "no"):
        out = tmp_path / f"{bos}.json"
        assert (
            main(["eval", str(full), "--data", str(text), "--seq-len", "48", "--add-bos", bos, "--json", str(out)]) == 0
        )
        counts[bos] = json.loads(out.read_text())["rows"][0]["n_tokens"]
    assert counts["yes"] > counts["no"]  # with BOS every token of a window is scored, without it the first is not


def test_eval_texts_sources(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("one paragraph\n\nanother paragraph")
    assert eval_texts(str(f)) == ["one paragraph", "another paragraph"]
    assert main(["eval", str(tmp_path / "missing"), "--data", str(f)]) != 0
