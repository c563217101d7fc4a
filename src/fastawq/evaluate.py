"""Perplexity of a causal language model on a text.

The text is tokenized once, cut into windows of ``seq_len`` tokens and every token is scored by
the model given the tokens before it in its window. With the default stride (the window length)
the windows do not overlap and the first token of each window is not scored (it has no context),
unless a BOS token is prepended to every window, in which case every token is scored. With a
smaller stride the windows overlap and each window scores only the tokens the previous window did
not reach, so every token (but the very first, without BOS) is scored exactly once with at least
``window - stride`` tokens of context: the usual sliding-window perplexity.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fastawq.errors import FastAWQError

__all__ = ["Perplexity", "Window", "perplexity", "plan_windows", "resolve_bos"]


@dataclass(frozen=True)
class Perplexity:
    """Result of :func:`perplexity`: ``ppl = exp(nll)``, ``nll`` the mean token NLL (nats)."""

    ppl: float
    nll: float
    n_tokens: int
    n_windows: int


@dataclass(frozen=True)
class Window:
    """Tokens ``[begin, end)`` of the text go into the model; the last ``n_scored`` are scored."""

    begin: int
    end: int
    n_scored: int


def resolve_bos(tokenizer: Any, add_bos: bool | None) -> int | None:
    """The BOS id to prepend to every window, or ``None``.

    ``add_bos=None`` prepends BOS iff the tokenizer has a ``bos_token_id`` and adds it by
    default (``tokenizer("a")["input_ids"][0] == bos_token_id``; Gemma does, SmolLM2 does not).
    """
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if add_bos is None:
        if bos_id is None:
            return None
        ids = list(tokenizer("a")["input_ids"])
        return int(bos_id) if ids and int(ids[0]) == int(bos_id) else None
    if not add_bos:
        return None
    if bos_id is None:
        raise FastAWQError(
            "add_bos=True, but the tokenizer has no BOS token",
            "pass add_bos=False (or None to decide from the tokenizer)",
        )
    return int(bos_id)


def plan_windows(
    n_tokens: int,
    window: int,
    stride: int,
    *,
    with_bos: bool,
    max_windows: int | None = None,
) -> list[Window]:
    """Split ``n_tokens`` tokens into evaluation windows (see the module docstring)."""
    windows: list[Window] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        fresh = end - prev_end  # tokens not scored by an earlier window
        scorable = end - begin if with_bos else end - begin - 1
        n_scored = min(fresh, scorable)
        if n_scored > 0:
            windows.append(Window(begin, end, n_scored))
            if max_windows is not None and len(windows) >= max_windows:
                break
        prev_end = end
        if end == n_tokens:
            break
    return windows


def _encode(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]


def _model_device(model: torch.nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _accepts_use_cache(model: torch.nn.Module) -> bool:
    try:
        return "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _batches(windows: Sequence[Window], batch_size: int) -> Iterator[list[Window]]:
    """Consecutive windows of equal length, at most ``batch_size`` at a time."""
    batch: list[Window] = []
    for w in windows:
        if batch and (len(batch) == batch_size or w.end - w.begin != batch[0].end - batch[0].begin):
            yield batch
            batch = []
        batch.append(w)
    if batch:
        yield batch


def perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: str | Sequence[str],
    *,
    seq_len: int = 512,
    stride: int | None = None,
    max_windows: int | None = None,
    add_bos: bool | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> Perplexity:
    """Perplexity of ``model`` on ``texts`` (joined with blank lines, tokenized once).

    ``seq_len`` is the model input length; when BOS is prepended the window holds
    ``seq_len - 1`` text tokens. ``stride`` defaults to the window length (no overlap);
    ``max_windows`` evaluates only the first windows. Token log-probabilities come from
    ``log_softmax`` in float32 and are summed in float64. Works for any causal LM whose forward
    takes ``input_ids`` and returns ``.logits``.
    """
    for value, name in ((seq_len, "seq_len"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FastAWQError(f"{name} must be a positive integer, got {value!r}", f"set {name} >= 1")
    if max_windows is not None and max_windows < 1:
        raise FastAWQError(
            f"max_windows must be a positive integer or None, got {max_windows!r}",
            "pass max_windows=None to evaluate the whole text",
        )
    text = texts if isinstance(texts, str) else "\n\n".join(texts)
    bos_id = resolve_bos(tokenizer, add_bos)
    offset = 1 if bos_id is not None else 0
    window = seq_len - offset
    if window < 2 - offset:
        raise FastAWQError(
            f"seq_len={seq_len} leaves no token to score",
            "use seq_len >= 2 (e.g. the model's context length or 512)",
        )
    if stride is None:
        stride = window
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= window:
        raise FastAWQError(
            f"stride must be between 1 and the window length {window}, got {stride!r}",
            "leave stride=None for non-overlapping windows",
        )
    ids = _encode(tokenizer, text)
    windows = plan_windows(len(ids), window, stride, with_bos=bos_id is not None, max_windows=max_windows)
    if not windows:
        raise FastAWQError(
            f"the evaluation text is too short: {len(ids)} token(s), nothing to score",
            "give a longer text",
        )

    device = _model_device(model)
    forward_kwargs: dict[str, Any] = {"use_cache": False} if _accepts_use_cache(model) else {}
    tokens = torch.tensor(ids, dtype=torch.int64)
    nll_sum = 0.0  # Python floats are float64
    n_scored = 0
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(windows), desc="perplexity", unit="window")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in _batches(windows, batch_size):
                rows = [tokens[w.begin : w.end] for w in batch]
                if bos_id is not None:
                    head = torch.tensor([bos_id], dtype=torch.int64)
                    rows = [torch.cat([head, row]) for row in rows]
                input_ids = torch.stack(rows).to(device)
                logits = model(input_ids=input_ids, **forward_kwargs).logits
                length = batch[0].end - batch[0].begin
                for i, w in enumerate(batch):
                    # text token j sits at input position j + offset, predicted at j + offset - 1
                    first = length - w.n_scored
                    pred = logits[i, first + offset - 1 : length + offset - 1].float()
                    target = input_ids[i, first + offset : length + offset].unsqueeze(-1)
                    logprobs = torch.log_softmax(pred, dim=-1).gather(-1, target)
                    nll_sum -= float(logprobs.to(torch.float64).sum().item())
                    n_scored += w.n_scored
                del logits
                if bar is not None:
                    bar.update(len(batch))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()

    nll = nll_sum / n_scored
    try:
        ppl = math.exp(nll)
    except OverflowError:
        ppl = math.inf
    return Perplexity(ppl=ppl, nll=nll, n_tokens=n_scored, n_windows=len(windows))
