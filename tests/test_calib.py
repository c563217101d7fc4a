"""Calibration data: loading texts, AWQ-style sample selection, blocks. No network, no hub."""

from __future__ import annotations

import json
import random
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from fastawq.calib import build_blocks, calibration_blocks, load_texts, select_samples
from fastawq.errors import FastAWQError


class WordTokenizer:
    """A tiny tokenizer: one id per whitespace-separated word, ids handed out on first sight."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        self.calls += 1
        return [self.vocab.setdefault(word, len(self.vocab) + 1) for word in text.split()]


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs as if offline; tests that need another setting override it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------------------------
# load_texts


def test_list_and_tuple_returned_as_is() -> None:
    texts = ["  a  ", "b", ""]
    assert load_texts(texts) == texts
    assert load_texts(("x", "y")) == ["x", "y"]


def test_list_with_non_string_raises() -> None:
    with pytest.raises(FastAWQError, match="#1 is a int"):
        load_texts(["ok", 3])  # type: ignore[list-item]


def test_all_empty_list_raises() -> None:
    with pytest.raises(FastAWQError, match="no calibration text"):
        load_texts(["", "  \n"])


def test_txt_paragraph_splitting(tmp_path: Path) -> None:
    path = tmp_path / "calib.txt"
    path.write_bytes("\ufefffirst line\nstill first\n\n  second  \n \t \n\n\nthird\r\n\r\nfourth\n\n\n".encode())
    assert load_texts(str(path)) == ["first line\nstill first", "second", "third", "fourth"]
    assert load_texts(path) == load_texts(str(path))  # PathLike works too


def test_txt_not_utf8_raises(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(FastAWQError, match="not UTF-8"):
        load_texts(str(path))


def test_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(
        json.dumps({"text": "one", "id": 1}) + "\n\n" + json.dumps({"text": "two"}) + "\n",
        encoding="utf-8",
    )
    assert load_texts(str(path)) == ["one", "two"]
    other = tmp_path / "body.jsonl"
    other.write_text(json.dumps({"body": "x"}) + "\n", encoding="utf-8")
    assert load_texts(str(other), text_column="body") == ["x"]


def test_jsonl_missing_field_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok"}\n{"content": "no"}\n', encoding="utf-8")
    with pytest.raises(FastAWQError, match=r"line 2: no field 'text'") as info:
        load_texts(str(path))
    assert "content" in str(info.value)
    assert info.value.hint is not None and "text_column" in info.value.hint


def test_jsonl_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok"}\n{"text": broken}\n', encoding="utf-8")
    with pytest.raises(FastAWQError, match=r"line 3: invalid JSON"):
        load_texts(str(path))


def test_jsonl_wrong_types(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('"just a string"\n', encoding="utf-8")
    with pytest.raises(FastAWQError, match="line 1: expected a JSON object"):
        load_texts(str(path))
    path.write_text('{"text": 5}\n', encoding="utf-8")
    with pytest.raises(FastAWQError, match="line 1: field 'text' is a int"):
        load_texts(str(path))


def test_json_list_of_strings_and_objects(tmp_path: Path) -> None:
    strings = tmp_path / "s.json"
    strings.write_text(json.dumps(["a", "b"]), encoding="utf-8")
    assert load_texts(str(strings)) == ["a", "b"]
    objects = tmp_path / "o.json"
    objects.write_text(json.dumps([{"text": "a"}, {"text": "b"}]), encoding="utf-8")
    assert load_texts(str(objects)) == ["a", "b"]
    bad = tmp_path / "d.json"
    bad.write_text(json.dumps({"text": "a"}), encoding="utf-8")
    with pytest.raises(FastAWQError, match="expected a JSON list"):
        load_texts(str(bad))
    lines = tmp_path / "lines.json"
    lines.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(FastAWQError, match="invalid JSON") as info:
        load_texts(str(lines))
    assert info.value.hint is not None and ".jsonl" in info.value.hint


def test_folder_recursive_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("b1\n\nb2\n", encoding="utf-8")
    sub = tmp_path / "a"
    sub.mkdir()
    (sub / "z.jsonl").write_text('{"text": "z"}\n', encoding="utf-8")
    (sub / "c.json").write_text('["c"]', encoding="utf-8")
    (tmp_path / "ignored.csv").write_text("text\nnope\n", encoding="utf-8")
    (tmp_path / "ignored.md").write_text("nope\n", encoding="utf-8")
    assert load_texts(str(tmp_path)) == ["c", "z", "b1", "b2"]


def test_empty_folder_and_empty_file_raise(tmp_path: Path) -> None:
    with pytest.raises(FastAWQError, match=r"no \.txt, \.jsonl or \.json files"):
        load_texts(str(tmp_path))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(FastAWQError, match="no calibration text"):
        load_texts(str(empty))


def test_unsupported_suffix_raises(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(FastAWQError, match="unsupported calibration file type"):
        load_texts(str(path))


@pytest.mark.parametrize(
    "name", ["data/missing.txt", "missing.jsonl", "./missing", "/no/such/dir", "~/no-such.json", "a/b/c"]
)
def test_missing_local_path_raises_no_such_file(name: str) -> None:
    with pytest.raises(FastAWQError, match="no such file"):
        load_texts(name)


def test_heldout_is_refused_for_calibration() -> None:
    with pytest.raises(FastAWQError, match="evaluation corpus"):
        load_texts("heldout")


# --------------------------------------------------------------------------------------------
# hub datasets, without the network


def _block_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import datasets`` fail as if the package were not installed."""
    monkeypatch.setitem(sys.modules, "datasets", None)


@pytest.mark.parametrize("name", ["pileval", "wikitext", "someone/some-dataset"])
def test_hub_name_offline_names_the_alternatives(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    _block_datasets(monkeypatch)  # even if datasets were installed it must not be reached
    with pytest.raises(FastAWQError) as info:
        load_texts(name)
    message = str(info.value)
    assert "could not load the Hugging Face dataset" in message
    assert "HF_HUB_OFFLINE" in message
    hint = info.value.hint or ""
    assert "'builtin'" in hint and ".txt" in hint and ".jsonl" in hint and "list of strings" in hint


def test_pileval_alias_named_in_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _block_datasets(monkeypatch)
    with pytest.raises(FastAWQError, match="mit-han-lab/pile-val-backup"):
        load_texts("pileval")


def test_hub_without_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    _block_datasets(monkeypatch)
    with pytest.raises(FastAWQError, match="`datasets` is not installed") as info:
        load_texts("pileval")
    assert "'builtin'" in (info.value.hint or "")


class _FakeDataset:
    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self._columns = columns
        self.column_names = list(columns)

    def __getitem__(self, key: str) -> list[Any]:
        return self._columns[key]


def _fake_datasets(monkeypatch: pytest.MonkeyPatch, result: Any) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def load_dataset(path: str, name: str | None = None, *, split: str) -> Any:
        calls.append((path, name, split))
        if isinstance(result, BaseException):
            raise result
        return result

    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", module)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    return calls


def test_hub_aliases_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fake_datasets(monkeypatch, _FakeDataset({"text": ["a", "", "b"], "meta": [1, 2, 3]}))
    assert load_texts("pileval") == ["a", "", "b"]
    assert load_texts("wikitext") == ["a", "", "b"]
    assert load_texts("wikitext", split="test") == ["a", "", "b"]
    assert load_texts("org/data", subset="en") == ["a", "", "b"]
    assert calls == [
        ("mit-han-lab/pile-val-backup", None, "validation"),
        ("wikitext", "wikitext-2-raw-v1", "train"),
        ("wikitext", "wikitext-2-raw-v1", "test"),
        ("org/data", "en", "validation"),
    ]


def test_hub_missing_column(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_datasets(monkeypatch, _FakeDataset({"content": ["a"]}))
    with pytest.raises(FastAWQError, match="no column 'text'") as info:
        load_texts("org/data")
    assert "content" in str(info.value)


def test_hub_unreachable_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_datasets(monkeypatch, ConnectionError("Couldn't reach 'org/data' on the Hub"))
    with pytest.raises(FastAWQError, match="could not load the Hugging Face dataset 'org/data'") as info:
        load_texts("org/data")
    assert "ConnectionError" in str(info.value)
    assert "'builtin'" in (info.value.hint or "")


# --------------------------------------------------------------------------------------------
# select_samples


def test_skip_rule_drops_texts_longer_than_seq_len() -> None:
    texts = [words(5, "a"), words(9, "b"), words(8, "c"), "   ", words(3, "d")]
    tok = WordTokenizer()
    samples = select_samples(texts, tok, n_samples=10, seq_len=8, seed=0)
    lengths = sorted(len(s) for s in samples)
    assert lengths == [3, 5, 8]  # 9 > 8 dropped, exactly seq_len kept, blank skipped


def test_texts_are_stripped_before_encoding() -> None:
    class Recorder(WordTokenizer):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def encode(self, text: str) -> list[int]:
            self.seen.append(text)
            return super().encode(text)

    tok = Recorder()
    select_samples(["  x y \n"], tok, n_samples=1, seq_len=4)
    assert tok.seen == ["x y"]


def test_n_samples_stops_selection() -> None:
    texts = [words(3, f"t{i}_") for i in range(50)]
    tok = WordTokenizer()
    samples = select_samples(texts, tok, n_samples=7, seq_len=16, seed=1)
    assert len(samples) == 7
    assert tok.calls == 7  # stops encoding once enough samples are kept


def test_order_follows_seeded_shuffle_of_a_copy() -> None:
    texts = [f"text{i}" for i in range(40)]
    original = list(texts)
    tok = WordTokenizer()
    samples = select_samples(texts, tok, n_samples=40, seq_len=4, seed=42)
    assert texts == original  # input untouched
    expected = list(texts)
    random.Random(42).shuffle(expected)
    decoded = {v: k for k, v in tok.vocab.items()}
    assert [decoded[s[0]] for s in samples] == expected


def test_seeded_determinism() -> None:
    texts = [f"text{i} more words" for i in range(60)]

    def pick(seed: int) -> list[str]:
        tok = WordTokenizer()
        samples = select_samples(texts, tok, n_samples=20, seq_len=8, seed=seed)
        decoded = {v: k for k, v in tok.vocab.items()}
        return [decoded[s[0]] for s in samples]

    assert pick(7) == pick(7)
    assert pick(7) != pick(8)


def test_bad_arguments_raise() -> None:
    with pytest.raises(FastAWQError, match="n_samples"):
        select_samples(["a"], WordTokenizer(), n_samples=0)
    with pytest.raises(FastAWQError, match="seq_len"):
        select_samples(["a"], WordTokenizer(), seq_len=0)


# --------------------------------------------------------------------------------------------
# blocks


def test_build_blocks_shape_and_tail_drop() -> None:
    samples = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    blocks = build_blocks(samples, 4)
    assert blocks.dtype == torch.int64
    assert blocks.shape == (2, 4)
    assert blocks.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]  # 9 and 10 dropped


def test_build_blocks_exact_multiple() -> None:
    assert build_blocks([[1, 2], [3, 4]], 2).tolist() == [[1, 2], [3, 4]]


def test_build_blocks_too_little_data() -> None:
    with pytest.raises(FastAWQError, match=r"5 token\(s\) from 2 sample\(s\), but one block needs 8") as info:
        build_blocks([[1, 2, 3], [4, 5]], 8)
    hint = info.value.hint or ""
    assert "n_samples" in hint and "max_calib_seq_len" in hint


def test_calibration_blocks_from_txt(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(words(6, f"p{i}_") for i in range(30)), encoding="utf-8")
    tok = WordTokenizer()
    blocks = calibration_blocks(str(path), tok, n_samples=10, seq_len=16, seed=3)
    assert blocks.shape == (60 // 16, 16)
    again = calibration_blocks(str(path), WordTokenizer(), n_samples=10, seq_len=16, seed=3)
    # vocab ids are handed out in encode order, so equal ids mean equal selection and order
    assert torch.equal(blocks, again)


def test_calibration_blocks_all_too_long() -> None:
    with pytest.raises(FastAWQError, match="longer than seq_len=4") as info:
        calibration_blocks([words(10), words(12)], WordTokenizer(), seq_len=4)
    assert "max_calib_seq_len" in (info.value.hint or "")


def test_calibration_blocks_with_hf_tokenizer() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<s>": 1, **{f"w{i}": i + 2 for i in range(20)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    backend.post_processor = tokenizers.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", unk_token="[UNK]")
    texts = [" ".join(f"w{(i + j) % 20}" for j in range(5)) for i in range(12)]
    blocks = calibration_blocks(texts, tok, n_samples=12, seq_len=6, seed=0)
    # default special tokens are kept, as in the AWQ reference: every sample starts with BOS
    assert blocks.shape == (12, 6)
    assert (blocks[:, 0] == 1).all()


def test_builtin_documents_join_paragraphs_up_to_the_limit() -> None:
    from fastawq.calib import _documents

    paras = ["a" * 500, "b" * 500, "c" * 500, "龍" * 100, "d" * 10]
    docs = _documents(paras, limit=1200)
    assert docs == ["a" * 500 + "\n\n" + "b" * 500, "c" * 500 + "\n\n" + "龍" * 100 + "\n\n" + "d" * 10]
    assert _documents([], limit=10) == []
    assert _documents(["x" * 50], limit=10) == ["x" * 50]  # an over-long paragraph stays whole


def test_select_texts_gives_the_same_blocks_unshuffled() -> None:
    from fastawq.calib import build_blocks, select_samples, select_texts

    from conftest import make_char_tokenizer

    tok = make_char_tokenizer()
    texts = [f"  text number {i} " + "x" * (i % 13) for i in range(60)] + ["y" * 200]
    chosen = select_texts(texts, tok, n_samples=20, seq_len=40, seed=3)
    assert len(chosen) == 20 and all(len(t) <= 40 for t in chosen)
    ids_a = select_samples(texts, tok, n_samples=20, seq_len=40, seed=3)
    ids_b = [tok.encode(t) for t in chosen]  # what a reader that does not shuffle sees
    assert torch.equal(build_blocks(ids_a, 16), build_blocks(ids_b, 16))
