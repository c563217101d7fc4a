"""``fastawq inspect``: describe a quantized checkpoint and validate every tensor.

What it can detect:
- a quantized layer missing one of its tensors (e.g. no ``scales``), wrong dtypes, shapes that do not
  agree with each other or with the group size;
- scales that are not finite or not positive;
- zero points that cannot be right: not 8 everywhere in a symmetric checkpoint, non-zero GEMV padding;
- a ``qweight`` packed in the wrong nibble order (plain 0..7 instead of AWQ's 0 2 4 6 1 3 5 7, or the
  zero points packed in a different order than the codes). This is statistical: weights are roughly
  centred on 0, so in each group the median code sits next to the zero point; the order under which
  codes and zero points agree best is the one used. It needs zero points that vary between columns
  (they do in real AWQ checkpoints); with (nearly) constant zero points, e.g. symmetric quantization,
  the order cannot be told from the file alone and the check says so.

What it cannot detect: codes and zero points permuted consistently with each other but not with the
scales, or a checkpoint quantized from different weights than its config says — that needs the
original model (compare perplexity with ``fastawq eval``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastawq.checkpoint import _shard_files
from fastawq.convert import CT, GEMV, iter_modules, read_format, to_gemm
from fastawq.errors import FastAWQError
from fastawq.format.awq_gemm import unpack_gemm
from fastawq.format.conversions import unpack_seq


@dataclass
class Report:
    path: str
    format: str
    bits: int
    group_size: int
    zero_point: bool
    quantized_layers: int = 0
    other_tensors: int = 0
    size_bytes: int = 0
    quantized_params: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def text(self) -> str:
        lines = [
            f"{self.path}",
            f"  format            {self.format}",
            f"  bits / group      {self.bits} / {self.group_size} ({'asymmetric' if self.zero_point else 'symmetric'})",
            f"  quantized layers  {self.quantized_layers} ({self.quantized_params / 1e6:.1f} M weights)",
            f"  other tensors     {self.other_tensors}",
            f"  size on disk      {self.size_bytes / 2**20:.1f} MiB",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        if self.problems:
            lines.append(f"  PROBLEMS ({len(self.problems)}):")
            lines += [f"    - {p}" for p in self.problems[:50]]
            if len(self.problems) > 50:
                lines.append(f"    … {len(self.problems) - 50} more")
        else:
            lines.append("  all tensors valid")
        return "\n".join(lines)


def nibble_order_fit(qweight: torch.Tensor, qzeros: torch.Tensor, group_size: int) -> dict[str, float]:
    """Mean |median code − zero point| per (group, column) under each (codes order, zeros order)."""
    k = qweight.shape[0]
    readers = {"awq": unpack_gemm, "plain": unpack_seq}  # AWQ's interleaved nibble order, or 0..7
    fits = {}
    for wname, read_codes in readers.items():
        codes = read_codes(qweight).view(k // group_size, group_size, -1).float()
        med = codes.median(dim=1).values  # [K/G, N]
        for zname, read_zeros in readers.items():
            fits[f"{wname}/{zname}"] = float((med - read_zeros(qzeros).float()).abs().mean())
    return fits


def _check_module(name: str, fmt: str, parts: dict[str, torch.Tensor], group_size: int, rep: Report) -> None:
    found: list[str] = []

    def bad(msg: str) -> None:
        found.append(msg)
        rep.problems.append(f"{name}: {msg}")

    int_names = ("qweight", "qzeros") if fmt != CT else ("weight_packed", "weight_zero_point")
    for tname in int_names:
        if tname in parts and parts[tname].dtype != torch.int32:
            bad(f"{tname} is {parts[tname].dtype}, must be torch.int32")
    scale_name = "weight_scale" if fmt == CT else "scales"
    s = parts[scale_name]
    allowed = (torch.float16, torch.bfloat16, torch.float32) if fmt == CT else (torch.float16,)
    if s.dtype not in allowed:
        bad(f"{scale_name} is {s.dtype}, must be {' or '.join(str(a) for a in allowed)}")
    if fmt == CT and "weight_shape" in parts and parts["weight_shape"].numel() != 2:
        bad(f"weight_shape has {parts['weight_shape'].numel()} values, must be 2")
    if found:
        return
    try:
        gemm = to_gemm(fmt, parts, group_size)
    except Exception as exc:  # shapes that do not fit together
        bad(f"tensors do not fit the {fmt} layout: {exc}")
        return
    qw, qz, sc = gemm["qweight"], gemm["qzeros"], gemm["scales"]
    k, n = qw.shape[0], qw.shape[1] * 8
    if k % group_size:
        bad(f"in_features {k} is not a multiple of the group size {group_size}")
        return
    if tuple(qz.shape) != (k // group_size, n // 8) or tuple(sc.shape) != (k // group_size, n):
        bad(
            f"shapes disagree: weight {k}×{n}, zeros {tuple(qz.shape)} (expected {(k // group_size, n // 8)}), "
            f"scales {tuple(sc.shape)} (expected {(k // group_size, n)})"
        )
        return
    sf = sc.float()
    if not bool(torch.isfinite(sf).all()):
        bad("scales contain NaN or Inf")
    elif bool((sf <= 0).any()):
        bad(f"{int((sf <= 0).sum())} scales are zero or negative")
    zeros = unpack_gemm(qz)
    if not rep.zero_point and bool((zeros != 8).any()):
        bad(f"symmetric checkpoint, but {int((zeros != 8).sum())} zero points are not 8")
    if fmt == GEMV:
        groups = k // group_size
        pad_scales = parts["scales"][:, groups:]
        pad_zeros = unpack_seq(parts["qzeros"])[:, groups:]
        if bool((pad_scales != 0).any()) or bool((pad_zeros != 0).any()):
            bad("GEMV padding (scales / zero points beyond the last group) is not zero")
    rep.quantized_params += k * n
    if fmt != CT and rep.zero_point and float(zeros.float().std()) > 0.5:
        fits = nibble_order_fit(qw, qz, group_size)
        best = min(fits, key=lambda key: fits[key])
        if best != "awq/awq" and fits[best] < 0.8 * fits["awq/awq"]:
            bad(
                f"nibble order looks wrong: codes/zeros agree best read as {best} "
                f"(mean |median code − zero| {fits[best]:.2f} vs {fits['awq/awq']:.2f} for awq/awq)"
            )


def inspect_checkpoint(path: str | Path) -> Report:
    root = Path(path)
    _, fmt, awq = read_format(root)
    files = _shard_files(root)
    rep = Report(str(root), fmt, awq.bits, awq.group_size, awq.zero_point)
    rep.size_bytes = sum(f.stat().st_size for f in files)
    try:
        for _fname, plain, modules in iter_modules(files, fmt, awq.zero_point):
            rep.other_tensors += len(plain)
            for name, parts in modules.items():
                rep.quantized_layers += 1
                _check_module(name, fmt, parts, awq.group_size, rep)
    except FastAWQError as exc:
        rep.problems.append(exc.message)
    if rep.quantized_layers == 0:
        rep.problems.append("no quantized layers found")
    if not rep.zero_point:
        rep.notes.append("symmetric: the nibble-order check needs varying zero points and was skipped")
    return rep


def report_json(rep: Report) -> str:
    return json.dumps(rep.to_dict(), indent=2)
