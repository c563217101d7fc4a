"""Calibration data, following the AWQ reference recipe.

The reference (``llm-awq`` / AutoAWQ ``get_calib_dataset``) shuffles the calibration texts with a
fixed seed, encodes each stripped text, skips texts longer than ``seq_len`` tokens and empty
ones, keeps the first ``n_samples``, concatenates all their tokens and cuts them into blocks of
``seq_len`` tokens, dropping the incomplete tail. This module does the same for texts from a
list, local files, the offline ``"builtin"`` corpus or (when ``datasets`` and the hub are
available) a Hugging Face dataset.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from fastawq.errors import FastAWQError

__all__ = [
    "HUB_ALIASES",
    "HubDataset",
    "SupportsEncode",
    "build_blocks",
    "calibration_blocks",
    "load_texts",
    "select_samples",
]


class SupportsEncode(Protocol):
    """Anything with ``encode(text) -> token ids`` (every Hugging Face tokenizer)."""

    def encode(self, text: str) -> Any: ...


@dataclass(frozen=True)
class HubDataset:
    """Where a short dataset name points on the Hugging Face hub."""

    path: str
    subset: str | None
    split: str
    text_column: str


#: Short names for the usual AWQ calibration sets; their split/column/subset are the defaults
#: when the caller passes ``None``.
HUB_ALIASES: dict[str, HubDataset] = {
    "pileval": HubDataset("mit-han-lab/pile-val-backup", None, "validation", "text"),
    "wikitext": HubDataset("wikitext", "wikitext-2-raw-v1", "train", "text"),
}

DEFAULT_SPLIT = "validation"
DEFAULT_TEXT_COLUMN = "text"
LOCAL_SUFFIXES = (".txt", ".jsonl", ".json")
# a name with one of these endings is meant as a local file, never as a hub dataset
_FILE_LIKE_SUFFIXES = frozenset(
    (*LOCAL_SUFFIXES, ".text", ".md", ".csv", ".tsv", ".parquet", ".arrow", ".gz", ".zst", ".xz")
)
_BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n")
_OFFLINE_ALTERNATIVES = (
    "work offline with 'builtin' (texts bundled with fastawq; fetch them once with "
    "`python -m fastawq.assets`), a local .txt/.jsonl/.json file or a folder of them, "
    "or a list of strings"
)


# --------------------------------------------------------------------------------------------
# loading texts


def load_texts(
    source: str | os.PathLike[str] | Sequence[str],
    *,
    split: str | None = None,
    text_column: str | None = None,
    subset: str | None = None,
) -> list[str]:
    """Load calibration texts from ``source``.

    ``source`` may be

    * a list or tuple of strings: returned as a list, unchanged;
    * ``"builtin"``: the offline calibration corpus (see :mod:`fastawq.assets`), split into
      paragraphs;
    * a ``.txt`` file: paragraphs separated by blank lines, each stripped, empty ones dropped;
    * a ``.jsonl`` file: one JSON object per line, text in field ``text_column``;
    * a ``.json`` file: a list of strings, or a list of objects with field ``text_column``;
    * a folder: every ``.txt``/``.jsonl``/``.json`` file below it, recursively, in sorted order;
    * a Hugging Face dataset: ``"pileval"`` (``mit-han-lab/pile-val-backup``, split
      ``validation``), ``"wikitext"`` (``wikitext``/``wikitext-2-raw-v1``, split ``train``) or
      any other hub name, loaded with the optional ``datasets`` package.

    ``split``, ``text_column`` and ``subset`` apply to hub datasets (``text_column`` also to
    JSON files). ``None`` means the alias's own setting, else split ``"validation"`` and column
    ``"text"``. An existing local file or folder wins over a hub name; ``"builtin"`` is reserved.
    """
    column = text_column if text_column is not None else DEFAULT_TEXT_COLUMN
    if isinstance(source, (list, tuple)):
        texts = list(source)
        for index, item in enumerate(texts):
            if not isinstance(item, str):
                raise FastAWQError(
                    f"calibration text #{index} is a {type(item).__name__}, not a string",
                    "pass a list of strings",
                )
        return _non_empty(texts, "the given list of strings")
    if isinstance(source, os.PathLike):
        return _load_path(Path(source).expanduser(), column, str(source))
    if not isinstance(source, str):
        raise FastAWQError(
            f"unsupported calibration source of type {type(source).__name__}",
            "pass 'builtin', a dataset name, a path, or a list of strings",
        )
    name = source.strip()
    if not name:
        raise FastAWQError(
            "the calibration source is an empty string",
            "pass 'builtin', a dataset name, a path, or a list of strings",
        )
    if name == "builtin":
        return _load_builtin()
    if name == "heldout":
        raise FastAWQError(
            "'heldout' is the evaluation corpus and must not be used for calibration",
            "calibrate on 'builtin'; evaluate with fastawq.assets.read_corpus('heldout')",
        )
    path = Path(name).expanduser()
    if path.exists():
        return _load_path(path, column, name)
    if _looks_local(name):
        raise FastAWQError(
            f"no such file or folder: {name}",
            "check the path; calibration data can be a .txt/.jsonl/.json file, a folder of "
            "them, 'builtin', or a Hugging Face dataset name such as 'pileval'",
        )
    return _load_hub(name, split=split, text_column=text_column, subset=subset)


def _non_empty(texts: list[str], what: str) -> list[str]:
    if not any(t.strip() for t in texts):
        raise FastAWQError(
            f"no calibration text found in {what}",
            "give non-empty text (or use the offline corpus 'builtin')",
        )
    return texts


def _looks_local(name: str) -> bool:
    if "\\" in name or name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return True
    if os.sep != "/" and os.sep in name:
        return True
    if len(name) > 1 and name[1] == ":":  # C:whatever
        return True
    return Path(name).suffix.lower() in _FILE_LIKE_SUFFIXES


def _read_text_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FastAWQError(f"cannot read {path}: {exc.strerror or exc}", "check the path") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FastAWQError(
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})",
            "convert the file to UTF-8, e.g. `iconv -t UTF-8 FILE > FILE.utf8`",
        ) from exc


def _paragraphs(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [p.strip() for p in _BLANK_LINE.split(text) if p.strip()]


def _text_of(record: Any, column: str, where: str) -> str:
    if isinstance(record, dict):
        if column not in record:
            keys = ", ".join(repr(k) for k in list(record)[:8]) or "none"
            raise FastAWQError(
                f"{where}: no field {column!r} (fields: {keys})",
                "pass text_column=<the field holding the text>",
            )
        value = record[column]
        if not isinstance(value, str):
            raise FastAWQError(
                f"{where}: field {column!r} is a {type(value).__name__}, not a string",
                "point text_column at a field holding plain text",
            )
        return value
    raise FastAWQError(
        f"{where}: expected a JSON object with field {column!r}, got {type(record).__name__}",
        'write one JSON object per line, e.g. {"text": "..."}',
    )


def _load_jsonl(path: Path, column: str) -> list[str]:
    texts: list[str] = []
    for lineno, line in enumerate(_read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FastAWQError(
                f"{where}: invalid JSON ({exc.msg} at column {exc.colno})",
                "a .jsonl file needs exactly one JSON object per line",
            ) from exc
        texts.append(_text_of(record, column, where))
    return texts


def _load_json(path: Path, column: str) -> list[str]:
    try:
        data = json.loads(_read_text_file(path))
    except json.JSONDecodeError as exc:
        hint = "a .json file must hold a list of strings or of objects"
        if exc.msg == "Extra data":
            hint += "; for one object per line, name the file .jsonl"
        raise FastAWQError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", hint) from exc
    if not isinstance(data, list):
        raise FastAWQError(
            f"{path}: expected a JSON list, got a {type(data).__name__}",
            'write a list of strings (["...", "..."]) or of objects ([{"text": "..."}])',
        )
    texts: list[str] = []
    for index, item in enumerate(data):
        if isinstance(item, str):
            texts.append(item)
        else:
            texts.append(_text_of(item, column, f"{path}, item {index}"))
    return texts


def _load_file(path: Path, column: str) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _paragraphs(_read_text_file(path))
    if suffix == ".jsonl":
        return _load_jsonl(path, column)
    if suffix == ".json":
        return _load_json(path, column)
    raise FastAWQError(
        f"unsupported calibration file type {suffix or '(no suffix)'!r}: {path}",
        "use a .txt (paragraphs separated by blank lines), .jsonl or .json file",
    )


def _load_path(path: Path, column: str, shown: str) -> list[str]:
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise FastAWQError(
                f"the folder {shown} holds no .txt, .jsonl or .json files",
                "put calibration text files into it, or point at a single file",
            )
        texts: list[str] = []
        for file in files:
            texts.extend(_load_file(file, column))
        return _non_empty(texts, f"the folder {shown}")
    if not path.exists():
        raise FastAWQError(f"no such file or folder: {shown}", "check the path")
    return _non_empty(_load_file(path, column), shown)


def _load_builtin() -> list[str]:
    from fastawq.assets import corpus_files

    texts: list[str] = []
    for file in corpus_files("builtin"):
        texts.extend(_documents(_paragraphs(_read_text_file(file))))
    return _non_empty(texts, "the 'builtin' corpus")


#: the built-in corpus's paragraphs are short (median ~40 tokens); consecutive paragraphs are joined
#: into documents of about this many UTF-8 bytes (~300 English / ~400 Chinese tokens), so that the
#: default 128 samples give a calibration set of the size the reference's Pile documents give
BUILTIN_DOC_BYTES = 1200


def _documents(paragraphs: list[str], limit: int = BUILTIN_DOC_BYTES) -> list[str]:
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for para in paragraphs:
        n = len(para.encode("utf-8"))
        if current and size + n > limit:
            docs.append("\n\n".join(current))
            current, size = [], 0
        current.append(para)
        size += n + 2
    if current:
        docs.append("\n\n".join(current))
    return docs


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_error(name: str, reason: str) -> FastAWQError:
    message = f"could not load the Hugging Face dataset {name!r}: {reason}"
    if "/" in name:
        message += f" (and there is no local file or folder named {name!r})"
    return FastAWQError(message, _OFFLINE_ALTERNATIVES)


def _load_hub(name: str, *, split: str | None, text_column: str | None, subset: str | None) -> list[str]:
    alias = HUB_ALIASES.get(name)
    if alias is not None:
        path = alias.path
        subset = subset if subset is not None else alias.subset
        split = split if split is not None else alias.split
        text_column = text_column if text_column is not None else alias.text_column
    else:
        path = name
        split = split if split is not None else DEFAULT_SPLIT
        text_column = text_column if text_column is not None else DEFAULT_TEXT_COLUMN
    shown = path if alias is None else f"{name} = {path}"
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _env_flag(flag):
            raise _hub_error(shown, f"{flag}={os.environ[flag]} (offline mode)")
    try:
        import datasets
    except ImportError:
        raise _hub_error(shown, "the optional package `datasets` is not installed") from None
    try:
        dataset = datasets.load_dataset(path, subset, split=split)
    except Exception as exc:  # network, auth, missing dataset/split: all end the same way
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise _hub_error(shown, reason) from exc
    columns = list(getattr(dataset, "column_names", None) or [])
    if text_column not in columns:
        raise FastAWQError(
            f"the dataset {shown!r} (split {split!r}) has no column {text_column!r} "
            f"(columns: {', '.join(repr(c) for c in columns) or 'none'})",
            "pass text_column=<the column holding the text>",
        )
    texts = [str(t) if t is not None else "" for t in dataset[text_column]]
    return _non_empty(texts, f"the dataset {shown!r}")


# --------------------------------------------------------------------------------------------
# samples and blocks


def _check_positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FastAWQError(f"{name} must be a positive integer, got {value!r}", f"set {name} >= 1")


def _select(
    texts: Sequence[str], tokenizer: SupportsEncode, n_samples: int, seq_len: int, seed: int
) -> tuple[list[list[int]], int]:
    samples, too_long, _ = _select_with_texts(texts, tokenizer, n_samples, seq_len, seed)
    return samples, too_long


def select_texts(
    texts: Sequence[str],
    tokenizer: SupportsEncode,
    *,
    n_samples: int = 128,
    seq_len: int = 512,
    seed: int = 42,
) -> list[str]:
    """The stripped texts :func:`select_samples` keeps, in its order.

    Handing these to another AWQ implementation (which takes a list of strings without
    shuffling) gives it exactly the same calibration blocks.
    """
    return _select_with_texts(texts, tokenizer, n_samples, seq_len, seed)[2]


def _select_with_texts(
    texts: Sequence[str], tokenizer: SupportsEncode, n_samples: int, seq_len: int, seed: int
) -> tuple[list[list[int]], int, list[str]]:
    _check_positive(n_samples, "n_samples")
    _check_positive(seq_len, "seq_len")
    order = list(range(len(texts)))
    # shuffling indices gives exactly the permutation that shuffling a copy of texts would
    random.Random(seed).shuffle(order)
    samples: list[list[int]] = []
    kept: list[str] = []
    too_long = 0
    for index in order:
        line = texts[index].strip()
        ids = [int(t) for t in tokenizer.encode(line)]
        if len(ids) > seq_len:
            too_long += 1
            continue
        if not ids:
            continue
        samples.append(ids)
        kept.append(line)
        if len(samples) == n_samples:
            break
    return samples, too_long, kept


def select_samples(
    texts: Sequence[str],
    tokenizer: SupportsEncode,
    *,
    n_samples: int = 128,
    seq_len: int = 512,
    seed: int = 42,
) -> list[list[int]]:
    """Pick calibration samples the AWQ way.

    The texts are shuffled with ``random.Random(seed)`` (the input is not modified); then, in
    that order, each text is stripped and encoded with ``tokenizer.encode`` (default special
    tokens), texts longer than ``seq_len`` tokens and empty ones are skipped, and selection
    stops once ``n_samples`` texts are kept.
    """
    return _select(texts, tokenizer, n_samples, seq_len, seed)[0]


def build_blocks(samples: Sequence[Sequence[int]], seq_len: int) -> torch.Tensor:
    """Concatenate the samples' tokens and cut them into ``[n_blocks, seq_len]`` int64 blocks.

    The incomplete tail is dropped.
    """
    _check_positive(seq_len, "seq_len")
    tokens = [int(t) for sample in samples for t in sample]
    n_blocks = len(tokens) // seq_len
    if n_blocks == 0:
        raise FastAWQError(
            f"not enough calibration tokens: {len(tokens)} token(s) from {len(samples)} "
            f"sample(s), but one block needs {seq_len}",
            "use more samples (n_samples), a lower max_calib_seq_len, or more calibration text",
        )
    data = torch.tensor(tokens[: n_blocks * seq_len], dtype=torch.int64)
    return data.view(n_blocks, seq_len)


def calibration_blocks(
    source: str | os.PathLike[str] | Sequence[str],
    tokenizer: SupportsEncode,
    *,
    n_samples: int = 128,
    seq_len: int = 512,
    seed: int = 42,
    split: str | None = None,
    text_column: str | None = None,
    subset: str | None = None,
) -> torch.Tensor:
    """Load texts from ``source``, select samples and return ``[n_blocks, seq_len]`` blocks."""
    texts = load_texts(source, split=split, text_column=text_column, subset=subset)
    samples, too_long = _select(texts, tokenizer, n_samples, seq_len, seed)
    if not samples:
        raise FastAWQError(
            f"no usable calibration text: all {len(texts)} text(s) were empty or longer than "
            f"seq_len={seq_len} tokens ({too_long} too long); longer texts are skipped, not cut",
            "split the text into shorter paragraphs (blank lines in a .txt file), or raise max_calib_seq_len",
        )
    return build_blocks(samples, seq_len)
