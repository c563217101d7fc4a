"""Discovering scaling groups by running a decoder layer.

A *scaling group* is a previous op whose output feeds a set of linear layers, such that
scaling the linears' input channels by ``s`` and the op's output by ``1/s`` leaves the layer's
output unchanged. Discovery needs no per-model code:

1. Run the layer once with hooks. A linear whose input *is* the output tensor of a norm-like module
   (a leaf with a 1-D ``weight``) joins that norm's group. The fold rule (``γ/s`` or Gemma's
   ``(1+γ)/s − 1``) is chosen by checking which one really divides the norm's output by ``s``.
2. A linear not fed by a norm may be fed, through channel-wise linear operations, by a sibling
   linear of matching size (``v_proj → o_proj`` in multi-head attention, ``up_proj → down_proj``
   in gated MLPs). Each candidate is tested: its output rows are multiplied by random ``s`` and the
   layer is run again; the pair is a group only if the linear's input is multiplied by exactly ``s``.
   Grouped-query attention fails the size test and is skipped, as in the reference.
3. A group's loss is measured on the smallest module containing all its linears (the attention
   block for q/k/v, the MLP for gate/up), or on the linear itself when it is alone.

Everything runs in float32 so that exact relations are told from approximate ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastawq.arch.fold import PrevKind, divide_prev
from fastawq.arch.overrides import ArchSpec
from fastawq.errors import FastAWQError

log = logging.getLogger(__name__)

_REL_TOL = 1e-3


@dataclass
class LayerCall:
    """Positional and keyword arguments of one call of a module."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def run(self, module: nn.Module) -> Any:
        return module(*self.args, **self.kwargs)


@dataclass(frozen=True)
class ScalingGroup:
    prev: str
    kind: PrevKind
    linears: tuple[str, ...]
    inspect: str  # module whose output measures the loss; "" is the layer itself


@dataclass(frozen=True)
class LayerPlan:
    linears: tuple[str, ...]  # all linears of the layer, in execution order
    groups: tuple[ScalingGroup, ...]

    @property
    def ungrouped(self) -> tuple[str, ...]:
        grouped = {name for g in self.groups for name in g.linears}
        return tuple(n for n in self.linears if n not in grouped)

    def describe(self) -> list[str]:
        lines = [
            f"{g.prev} ({g.kind.value}) -> {', '.join(g.linears)} [loss on {g.inspect or 'layer'}]" for g in self.groups
        ]
        lines += [f"(no scaling) {n}" for n in self.ungrouped]
        return lines


def first_tensor(value: Any) -> torch.Tensor:
    """The first tensor of a module's output (a tensor, or a tuple whose first item is one)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state  # type: ignore[no-any-return]
    raise TypeError(f"cannot find the output tensor in {type(value).__name__}")


def find_decoder_layers(model: nn.Module, spec: ArchSpec) -> tuple[str, nn.ModuleList]:
    """The ModuleList of decoder layers: ``spec.layers_path`` or the largest stack of identical blocks."""
    if spec.layers_path:
        mod = model.get_submodule(spec.layers_path)
        if not isinstance(mod, nn.ModuleList):
            raise FastAWQError(f"{spec.layers_path} is a {type(mod).__name__}, not a ModuleList of layers")
        return spec.layers_path, mod
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        kinds = {type(m) for m in mod}
        if len(kinds) != 1 or not any(isinstance(m, nn.Linear) for m in mod[0].modules()):
            continue
        size = sum(p.numel() for p in mod.parameters())
        if best is None or size > best[0]:
            best = (size, name, mod)
    if best is None:
        found = sorted({type(m).__name__ for m in model.modules()})[:20]
        raise FastAWQError(
            f"found no stack of decoder layers with linear layers in {type(model).__name__} "
            f"(module types found: {', '.join(found)})",
            hint="this architecture is not supported yet; please open an issue with the model's config.json",
        )
    return best[1], best[2]


def _is_norm_like(module: nn.Module) -> bool:
    if isinstance(module, (nn.Linear, nn.Embedding)) or any(True for _ in module.children()):
        return False
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() == 1


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def common_ancestor(names: Iterable[str]) -> str:
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for level in zip(*parts):
        if all(p == level[0] for p in level):
            common.append(level[0])
        else:
            break
    return ".".join(common)


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(_cast_floats(v, dtype) for v in value)
    if isinstance(value, list):
        return [_cast_floats(v, dtype) for v in value]
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    return value


@contextmanager
def _float32(layer: nn.Module) -> Iterator[None]:
    tensors = dict(layer.named_parameters()) | dict(layer.named_buffers())
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if all(d == torch.float32 or not d.is_floating_point for d in dtypes.values()):
        yield
        return
    layer.float()
    try:
        yield
    finally:
        for name, t in (dict(layer.named_parameters()) | dict(layer.named_buffers())).items():
            t.data = t.data.to(dtypes[name])


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    denom = float(expected.float().norm())
    return float((actual.float() - expected.float()).norm()) / max(denom, 1e-12)


@torch.no_grad()
def discover_layer(layer: nn.Module, call: LayerCall, spec: ArchSpec) -> LayerPlan:
    """Discover the scaling groups of ``layer`` by running it on ``call``."""
    modules = dict(layer.named_modules())
    linears = {n: m for n, m in modules.items() if isinstance(m, nn.Linear)}
    norms = {n: m for n, m in modules.items() if n and _is_norm_like(m)}
    call32 = LayerCall(_cast_floats(call.args, torch.float32), _cast_floats(call.kwargs, torch.float32))

    with _float32(layer):
        order: list[str] = []
        lin_in: dict[str, torch.Tensor] = {}
        norm_io: dict[str, tuple[tuple[Any, ...], torch.Tensor]] = {}
        handles = []

        def lin_hook(name: str) -> Any:
            def hook(_m: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
                if name not in lin_in:
                    order.append(name)
                    lin_in[name] = args[0]

            return hook

        def norm_hook(name: str) -> Any:
            def hook(_m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
                if name not in norm_io and isinstance(out, torch.Tensor):
                    norm_io[name] = (args, out)

            return hook

        try:
            for n, m in linears.items():
                handles.append(m.register_forward_hook(lin_hook(n)))
            for n, m in norms.items():
                handles.append(m.register_forward_hook(norm_hook(n)))
            call32.run(layer)
        finally:
            for h in handles:
                h.remove()

        gen = torch.Generator().manual_seed(0)
        groups: list[ScalingGroup] = []
        fed_by_norm: dict[str, list[str]] = {}
        for lin in order:
            source = _source_norm(lin_in[lin], norm_io)
            if source is not None:
                fed_by_norm.setdefault(source, []).append(lin)
        for norm_name, lins in fed_by_norm.items():
            kind = _norm_kind(norms[norm_name], norm_io[norm_name], gen)
            if kind is None:
                log.info("%s feeds %s but no fold rule reproduces it; not scaled", norm_name, lins)
                continue
            groups.append(ScalingGroup(norm_name, kind, tuple(lins), _inspect_for(lins)))

        in_norm_group = {lin for lins in fed_by_norm.values() for lin in lins}
        for lin in order:
            if lin in in_norm_group:
                continue
            target = linears[lin]
            candidates = [
                n
                for n in order
                if n != lin
                and _parent(n) == _parent(lin)
                and linears[n].out_features == target.in_features
                and (n, lin) not in spec.forbid_pairs
            ]
            passing = [p for p in candidates if _scales_through(layer, call32, linears[p], target, lin_in[lin], gen)]
            if passing:
                prev = passing[-1]
                groups.append(ScalingGroup(prev, PrevKind.LINEAR, (lin,), lin))
    groups = [g for g in groups if not any((g.prev, lin) in spec.forbid_pairs for lin in g.linears)]
    position = {n: i for i, n in enumerate(order)}
    groups.sort(key=lambda g: position[g.linears[0]])
    unused = [n for n in linears if n not in position]
    if unused:
        log.info("linears not used in the layer's forward pass (left alone): %s", unused)
    return LayerPlan(linears=tuple(order), groups=tuple(groups))


def _source_norm(x: torch.Tensor, norm_io: dict[str, tuple[tuple[Any, ...], torch.Tensor]]) -> str | None:
    """The norm whose output tensor *is* ``x``; failing that, the only norm whose output equals it.

    Freshly initialised norms (weight 1, bias 0) fed the same input give equal outputs (parallel
    attention/MLP blocks), so equality alone is trusted only when it is unambiguous.
    """
    for name, (_args, out) in norm_io.items():
        if x is out:
            return name
    equal = [n for n, (_a, out) in norm_io.items() if x.shape == out.shape and torch.equal(x, out)]
    return equal[0] if len(equal) == 1 else None


def _inspect_for(linears: list[str]) -> str:
    return linears[0] if len(linears) == 1 else common_ancestor(linears)


def _random_scales(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * 1.5 + 0.5).to(device)


def _norm_kind(norm: nn.Module, io: tuple[tuple[Any, ...], torch.Tensor], gen: torch.Generator) -> PrevKind | None:
    args, out = io
    weight = norm.weight
    assert isinstance(weight, torch.Tensor)
    s = _random_scales(weight.numel(), gen, weight.device)
    saved = {k: v.detach().clone() for k, v in norm.state_dict().items()}
    try:
        for kind in (PrevKind.NORM, PrevKind.NORM_PLUS_ONE):
            divide_prev(norm, kind, s)
            y = norm(*args)
            norm.load_state_dict(saved)
            if isinstance(y, torch.Tensor) and _relative_error(y, out / s) < _REL_TOL:
                return kind
    finally:
        norm.load_state_dict(saved)
    return None


def _scales_through(
    layer: nn.Module,
    call: LayerCall,
    prev: nn.Linear,
    target: nn.Linear,
    target_input: torch.Tensor,
    gen: torch.Generator,
) -> bool:
    s = _random_scales(prev.out_features, gen, prev.weight.device)
    seen: list[torch.Tensor] = []
    handle = target.register_forward_hook(lambda _m, args, _o: seen.append(args[0]) if not seen else None)
    w0 = prev.weight.data.clone()
    b0 = prev.bias.data.clone() if prev.bias is not None else None
    try:
        prev.weight.data.mul_(s.view(-1, 1))
        if prev.bias is not None:
            prev.bias.data.mul_(s)
        call.run(layer)
    finally:
        handle.remove()
        prev.weight.data.copy_(w0)
        if prev.bias is not None and b0 is not None:
            prev.bias.data.copy_(b0)
    return bool(seen) and _relative_error(seen[0], target_input * s) < _REL_TOL
