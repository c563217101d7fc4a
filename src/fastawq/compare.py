"""``fastawq eval``: perplexity of several models side by side (original, RTN, AWQ …) on held-out text.

Each model is a full-precision model (folder, .gguf, hub id) or a quantized checkpoint (AWQ GEMM, GEMV
or compressed-tensors). ``compare_rtn`` adds, for every full-precision model, a round-to-nearest copy
quantized in memory with the same bits and group size: the baseline AWQ has to beat.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastawq.errors import FastAWQError


@dataclass
class EvalRow:
    model: str
    kind: str
    ppl: float
    nll: float
    n_tokens: int
    n_windows: int
    seconds: float
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eval_texts(data: str, split: str | None = None) -> list[str]:
    """Evaluation texts: ``heldout`` (the built-in held-out corpus), ``wikitext`` (wikitext-2 *test*),
    or anything :func:`fastawq.calib.load_texts` reads (files, folders, ``builtin``, hub datasets)."""
    from fastawq import assets
    from fastawq.calib import load_texts

    if data == "heldout":
        return assets.read_corpus("heldout")
    if data == "wikitext" and split is None:
        split = "test"
    return load_texts(data, split=split)


def evaluate_models(
    models: Sequence[str],
    texts: Sequence[str],
    *,
    seq_len: int = 512,
    stride: int | None = None,
    max_windows: int | None = None,
    add_bos: bool | None = None,
    compare_rtn: bool = False,
    group_size: int = 128,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 4,
    kernel: str | None = None,
    progress: bool = False,
    tasks: Sequence[str] = (),
    tasks_path: str | None = None,
    task_limit: int | float | None = None,
    num_fewshot: int | None = None,
) -> list[EvalRow]:
    """One row per model (and per RTN baseline), in the order given."""
    from transformers import AutoTokenizer

    from fastawq.api import load_quantized
    from fastawq.config import AWQConfig
    from fastawq.convert import is_quantized_checkpoint, read_format
    from fastawq.evaluate import perplexity
    from fastawq.loading import load_pretrained
    from fastawq.pipeline import rtn_quantize

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    default_dtype = torch.float16 if dev.startswith("cuda") else torch.float32
    rows: list[EvalRow] = []

    def score(name: str, kind: str, model: torch.nn.Module, tokenizer: Any) -> None:
        t0 = time.perf_counter()
        with torch.no_grad():
            r = perplexity(
                model,
                tokenizer,
                list(texts),
                seq_len=seq_len,
                stride=stride,
                max_windows=max_windows,
                add_bos=add_bos,
                batch_size=batch_size,
                progress=progress,
            )
        row = EvalRow(name, kind, r.ppl, r.nll, r.n_tokens, r.n_windows, time.perf_counter() - t0)
        if tasks:
            from fastawq.lm_eval_adapter import run_tasks

            row.tasks = run_tasks(
                model, tokenizer, tasks, include_path=tasks_path, limit=task_limit, num_fewshot=num_fewshot
            )
        rows.append(row)

    for spec in models:
        if is_quantized_checkpoint(spec):
            _, fmt, qcfg = read_format(Path(spec))
            model, _ = load_quantized(spec, device=dev, dtype=dtype or default_dtype, kernel=kernel)
            tokenizer = AutoTokenizer.from_pretrained(spec)
            score(spec, f"{fmt} w{qcfg.bits} g{qcfg.group_size}", model, tokenizer)
            del model
            continue
        model, tokenizer, _ = load_pretrained(spec, dtype=dtype or default_dtype)
        if tokenizer is None:
            raise FastAWQError(f"{spec} has no tokenizer", hint="evaluate a folder that holds the tokenizer files")
        model = model.to(dev)
        score(spec, f"full precision ({str(dtype or default_dtype).replace('torch.', '')})", model, tokenizer)
        if compare_rtn:
            rtn = copy.deepcopy(model)
            del model
            rtn_quantize(rtn, AWQConfig(group_size=group_size))
            score(spec, f"RTN w4 g{group_size} (in memory)", rtn, tokenizer)
            del rtn
    return rows


def table(rows: Sequence[EvalRow]) -> str:
    width = max([len(r.model) for r in rows] + [5])
    kind_w = max([len(r.kind) for r in rows] + [4])
    metrics = sorted({f"{t}/{m}" for r in rows for t, ms in r.tasks.items() for m in ms})
    head = f"{'model':{width}s}  {'kind':{kind_w}s}  {'perplexity':>10s}  {'tokens':>8s}  {'seconds':>8s}"
    lines = [head + "".join(f"  {m:>14s}" for m in metrics)]
    for r in rows:
        line = f"{r.model:{width}s}  {r.kind:{kind_w}s}  {r.ppl:10.3f}  {r.n_tokens:8d}  {r.seconds:8.1f}"
        for m in metrics:
            task, metric = m.split("/", 1)
            value = r.tasks.get(task, {}).get(metric)
            line += f"  {value:14.4f}" if value is not None else f"  {'':14s}"
        lines.append(line)
    return "\n".join(lines)
