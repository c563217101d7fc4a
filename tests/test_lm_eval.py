"""The lm-evaluation-harness adapter, offline: a local multiple-choice task on a quantized checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastawq import AWQConfig, load_quantized, quantize_model, save_quantized
from fastawq.cli import main

from tiny_models import calib_ids, make_model

pytest.importorskip("lm_eval")

DOCS = [
    {"question": "The quick brown fox jumps over the lazy", "choices": ["dog", "cat", "sheep"], "answer": 0},
    {"question": "Sample 3: the quick brown", "choices": ["fox", "box", "ox"], "answer": 0},
    {"question": "counting sheep while the", "choices": ["lazy", "quick", "brown"], "answer": 1},
    {"question": "over the lazy dog while", "choices": ["counting", "jumping"], "answer": 0},
    {"question": "jumps over", "choices": ["the", "a", "one", "two"], "answer": 0},
]


def _task_dir(root: Path) -> Path:
    data = root / "tiny_mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "tiny_mc.yaml").write_text(
        "task: fastawq_tiny_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    return tasks


def _manual_accuracy(model: torch.nn.Module, tok: object) -> float:
    """argmax over choices of log p(" " + choice | question), computed directly with the model."""
    correct = 0
    for d in DOCS:
        ctx = tok(d["question"], add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        scores = []
        for choice in d["choices"]:
            cont = tok(" " + choice, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            scores.append(sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == d["answer"])
    return correct / len(DOCS)


def test_tasks_on_a_quantized_checkpoint_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import make_char_tokenizer

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "ds-cache"))
    monkeypatch.setenv("FASTAWQ_KERNEL", "reference")  # the manual check below uses the same exact kernel
    tok = make_char_tokenizer()
    model = make_model("llama")
    result = quantize_model(model, calib_ids(), AWQConfig(group_size=32), progress=False)
    ckpt = save_quantized(model, tmp_path / "awq", result, tokenizer=tok)
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 20)
    out = tmp_path / "eval.json"
    argv = ["eval", str(ckpt), "--data", str(text), "--seq-len", "64"]
    argv += ["--tasks", "fastawq_tiny_mc", "--tasks-path", str(_task_dir(tmp_path)), "--json", str(out)]
    assert main(argv) == 0
    row = json.loads(out.read_text())["rows"][0]
    acc = row["tasks"]["fastawq_tiny_mc"]["acc"]
    loaded, _ = load_quantized(ckpt, dtype=torch.float32)
    assert acc == pytest.approx(_manual_accuracy(loaded, tok))
    assert "fastawq_tiny_mc/acc" in capsys.readouterr().out


def test_unknown_task_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import make_char_tokenizer

    tok = make_char_tokenizer()
    full = tmp_path / "full"
    make_model("llama").save_pretrained(full)
    tok.save_pretrained(full)
    text = tmp_path / "t.txt"
    text.write_text("some text to score " * 20)
    argv = ["eval", str(full), "--data", str(text), "--seq-len", "32", "--tasks", "no_such_task_xyz"]
    argv += ["--tasks-path", str(_task_dir(tmp_path))]
    assert main(argv) != 0
    assert "no_such_task_xyz" in capsys.readouterr().err
