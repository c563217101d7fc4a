"""AWQ scale search and clip search.

Both searches work on plain tensors and callables: the caller (``fastawq.pipeline``) decides
which module to run and on which recorded inputs.

Scale search, for one scaling group (a previous op feeding a set of linears): for α on a grid,
``s = x_mean^α / w_mean^(1-α)`` (duo scaling) or ``s = x_mean^α``, normalised by
``sqrt(max(s)·min(s))``; each linear's weight becomes ``Q(W·diag(s))·diag(s)⁻¹``; the group's
output is compared (mean squared error) with the unquantized output; the best α wins.

Clip search, per linear: shrink each (output channel, group)'s max |w| by factors
1.00, 0.95, … (``1 - i/n_grid`` for ``i < max_shrink·n_grid``), quantize, and keep the factor with the
least error of the per-group partial products on a sample of input tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from fastawq.algo.quant import fake_quantize


@dataclass(frozen=True)
class SearchOptions:
    """How scales and clipping ranges are searched (not stored in the checkpoint's config)."""

    n_grid: int = 20
    duo_scaling: bool = True
    apply_clip: bool = True
    clip_grid: int = 20
    clip_max_shrink: float = 0.5
    clip_sample_tokens: int = 512
    #: feed the next layer the *quantized* layer's output (llm-compressor's default; lower perplexity)
    #: instead of the full-precision output (AutoAWQ's); ``False`` reproduces the reference exactly
    error_propagation: bool = True

    def __post_init__(self) -> None:
        if self.n_grid < 1:
            raise ValueError("n_grid must be at least 1")
        if not 0.0 <= self.clip_max_shrink < 1.0:
            raise ValueError("clip_max_shrink must lie in [0, 1)")

    def to_dict(self) -> dict[str, object]:
        return {
            "n_grid": self.n_grid,
            "duo_scaling": self.duo_scaling,
            "apply_clip": self.apply_clip,
            "clip_grid": self.clip_grid,
            "clip_max_shrink": self.clip_max_shrink,
            "clip_sample_tokens": self.clip_sample_tokens,
            "error_propagation": self.error_propagation,
        }


@dataclass
class ScaleResult:
    scales: torch.Tensor  # float32 [C]
    alpha: float
    loss_rtn: float  # round-to-nearest (s = 1) loss of this group
    loss_best: float
    losses: list[float] = field(default_factory=list)


class SearchFailed(RuntimeError):
    """No α on the grid produced a finite loss."""


def weight_mean(weights: Sequence[torch.Tensor], group_size: int) -> torch.Tensor:
    """Mean over output rows of |w| normalised by its group's max |w|, per input channel."""
    w = torch.cat([x.detach().float() for x in weights], dim=0)
    n, k = w.shape
    wg = w.abs().view(n, k // group_size, group_size)
    wg = wg / (wg.amax(dim=-1, keepdim=True) + 1e-6)
    return wg.view(n, k).mean(dim=0)


def candidate_scales(x_mean: torch.Tensor, w_mean: torch.Tensor | None, alpha: float) -> torch.Tensor:
    if w_mean is not None:
        s = x_mean.pow(alpha) / (w_mean.pow(1.0 - alpha) + 1e-4)
    else:
        s = x_mean.pow(alpha)
    s = s.clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def search_scale(
    *,
    run: Callable[[], list[torch.Tensor]],
    reference: list[torch.Tensor],
    weights: Sequence[torch.nn.Parameter],
    quantize_mask: Sequence[bool],
    x_mean: torch.Tensor,
    bits: int,
    group_size: int,
    zero_point: bool,
    options: SearchOptions,
) -> ScaleResult:
    """Grid-search the AWQ scale of one group.

    ``run()`` evaluates the group's module on its recorded inputs with the *current* weights and
    returns its outputs; ``reference`` is what it returned unquantized. ``weights`` are the
    linears' weight parameters; they are restored before returning.
    """
    originals = [w.data.clone() for w in weights]
    device = originals[0].device
    x_mean = x_mean.to(device=device, dtype=torch.float32)
    w_mean = (
        weight_mean([o for o, q in zip(originals, quantize_mask) if q], group_size)
        if options.duo_scaling and any(quantize_mask)
        else None
    )
    numel = sum(r.numel() for r in reference)

    def loss_with(scales: torch.Tensor) -> float:
        for param, orig, quantize in zip(weights, originals, quantize_mask):
            if not quantize:
                param.data.copy_(orig)
                continue
            s = scales.to(orig.dtype).view(1, -1)
            scaled = orig * s
            param.data.copy_(fake_quantize(scaled, bits=bits, group_size=group_size, zero_point=zero_point) / s)
        total = 0.0
        for out, ref in zip(run(), reference):
            total += float((out.float() - ref.float()).pow(2).sum())
        return total / max(numel, 1)

    try:
        loss_rtn = loss_with(torch.ones_like(x_mean))
        best_alpha, best_loss, best_s = -1.0, math.inf, torch.ones_like(x_mean)
        losses: list[float] = []
        for i in range(options.n_grid):
            alpha = i / options.n_grid
            s = candidate_scales(x_mean, w_mean, alpha)
            loss = loss_with(s)
            losses.append(loss)
            if math.isfinite(loss) and loss < best_loss:
                best_alpha, best_loss, best_s = alpha, loss, s
    finally:
        for param, orig in zip(weights, originals):
            param.data.copy_(orig)
    if best_alpha < 0:
        raise SearchFailed(f"no scale on the grid of {options.n_grid} gave a finite loss (losses: {losses[:4]}…)")
    return ScaleResult(scales=best_s.float(), alpha=best_alpha, loss_rtn=loss_rtn, loss_best=best_loss, losses=losses)


def sample_tokens(inputs: Sequence[torch.Tensor], n_tokens: int) -> torch.Tensor:
    """Evenly strided sample of about ``n_tokens`` rows from the flattened inputs [*, C]."""
    flat = torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs], dim=0)
    step = max(1, flat.shape[0] // max(n_tokens, 1))
    return flat[::step]


@torch.no_grad()
def search_clip(
    weight: torch.Tensor,
    x: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    zero_point: bool,
    options: SearchOptions,
    rows_per_batch: int = 256,
) -> torch.Tensor:
    """Best max-|w| per (output channel, group): float32 [N, K/G].

    ``x`` is a sample of this linear's inputs [T, K]. The error of a candidate is the mean over
    tokens of the squared difference of the per-group partial products ``x_g · w_g``.
    """
    n, k = weight.shape
    n_groups = k // group_size
    xg = x.float().reshape(-1, n_groups, group_size).permute(1, 0, 2)  # [ng, T, G]
    steps = int(options.clip_max_shrink * options.clip_grid)
    best = torch.empty(n, n_groups, dtype=torch.float32, device=weight.device)
    for start in range(0, n, rows_per_batch):
        w = weight[start : start + rows_per_batch].float()
        rows = w.shape[0]
        wg = w.view(rows, n_groups, group_size)  # [R, ng, G]
        max_abs = wg.abs().amax(dim=-1)  # [R, ng]
        # partial products per group: [ng, T, R]
        ref = torch.bmm(xg, wg.permute(1, 2, 0))
        best_err = torch.full_like(max_abs, math.inf)
        best_max = max_abs.clone()
        for i in range(max(steps, 1)):
            limit = max_abs * (1.0 - i / options.clip_grid)
            clipped = torch.maximum(torch.minimum(wg, limit.unsqueeze(-1)), -limit.unsqueeze(-1))
            q = fake_quantize(clipped.view(rows, k), bits=bits, group_size=group_size, zero_point=zero_point)
            out = torch.bmm(xg, q.view(rows, n_groups, group_size).permute(1, 2, 0))
            err = (out - ref).pow(2).mean(dim=1).transpose(0, 1)  # [R, ng]
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better, limit, best_max)
        best[start : start + rows] = best_max
    return best


def apply_clip(weight: torch.Tensor, max_abs: torch.Tensor, group_size: int) -> None:
    """Clamp ``weight`` [N, K] in place to ±max_abs [N, K/G]."""
    n, k = weight.shape
    wg = weight.data.view(n, k // group_size, group_size)
    lim = max_abs.to(weight.dtype).unsqueeze(-1)
    wg.copy_(torch.maximum(torch.minimum(wg, lim), -lim))
