from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastawq.cli import build_parser, main

from conftest import TEXTS
from tiny_models import make_model


def test_help_lists_commands_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--w-bit",
        "--group-size",
        "--no-zero-point",
        "--calib",
        "--max-calib-samples",
        "--max-calib-seq-len",
        "--overwrite",
        "--skip-indivisible",
    ):
        assert flag in text
    assert {"quantize", "generate", "demo"} <= set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def test_quantize_then_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str], char_tokenizer: object) -> None:
    src = tmp_path / "tiny"
    make_model("qwen2").save_pretrained(src)
    char_tokenizer.save_pretrained(src)  # type: ignore[attr-defined]
    calib = tmp_path / "calib.txt"
    calib.write_text("\n\n".join(TEXTS))
    out = tmp_path / "out"
    argv = [
        "quantize",
        str(src),
        str(out),
        "--group-size",
        "64",
        "--calib",
        str(calib),
        "--max-calib-samples",
        "32",
        "--max-calib-seq-len",
        "128",
        "--dtype",
        "float32",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "saved" in text and "14 quantized" in text and "per decoder layer" in text
    conf = json.loads((out / "config.json").read_text())
    assert conf["quantization_config"]["group_size"] == 64
    assert (out / "tokenizer.json").is_file() and (out / "fastawq_record.json").is_file()
    # a second run without --overwrite refuses; with it, replaces
    assert main(argv) == 2
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["generate", str(out), "the quick", "--max-new-tokens", "4", "--dtype", "float32"]) == 0
    generated = capsys.readouterr().out
    assert generated.startswith("the quick") and len(generated.strip()) >= len("the quick")
