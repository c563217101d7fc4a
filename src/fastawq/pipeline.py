"""Layer-by-layer AWQ quantization of a causal LM.

1. Capture the inputs of the first decoder layer (hidden states and the keyword arguments the
   layer needs) for every calibration chunk; hidden states wait on the offload device (CPU).
2. For each layer, on the compute device: discover its scaling groups, run it once recording the
   linears' inputs and the inspected modules' calls (its output is the next layer's input), search
   every group's scale on the unmodified layer, fold all scales, search clipping ranges, quantize,
   and put the layer back.

Only one decoder layer is on the compute device at a time.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastawq.algo.quant import QuantizedWeight, quantize_weight
from fastawq.algo.search import (
    SearchFailed,
    SearchOptions,
    apply_clip,
    sample_tokens,
    search_clip,
    search_scale,
)
from fastawq.arch.discover import LayerCall, LayerPlan, discover_layer, find_decoder_layers, first_tensor
from fastawq.arch.fold import divide_prev, multiply_next
from fastawq.arch.overrides import ArchSpec, arch_spec
from fastawq.config import AWQConfig, Layout
from fastawq.errors import FastAWQError
from fastawq.nn.qlinear import AWQLinear

log = logging.getLogger(__name__)


@dataclass
class LayerRecord:
    index: int
    seconds: float
    groups: list[dict[str, Any]] = field(default_factory=list)
    linears: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class QuantizeResult:
    config: AWQConfig
    options: SearchOptions
    layers_path: str
    quantized: list[str]
    not_converted: list[str]
    records: list[LayerRecord]
    seconds: float
    n_calib_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantization_config": self.config.to_dict(),
            "search_options": self.options.to_dict(),
            "layers_path": self.layers_path,
            "n_calib_tokens": self.n_calib_tokens,
            "seconds": round(self.seconds, 3),
            "quantized": self.quantized,
            "not_converted": self.not_converted,
            "layers": [
                {"index": r.index, "seconds": round(r.seconds, 3), "groups": r.groups, "linears": r.linears}
                for r in self.records
            ],
        }


@dataclass
class _Chunk:
    hidden: torch.Tensor  # [b, t, d] on the offload device
    kwargs: dict[Any, dict[str, Any]]  # attention type → layer kwargs (on the compute device)


class _Stop(Exception):
    pass


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or name.endswith("." + p) for p in patterns)


def _linear_names(layer: nn.Module) -> list[str]:
    return [n for n, m in layer.named_modules() if isinstance(m, nn.Linear)]


def _divisor_hint(in_features: list[int]) -> str:
    ok = [g for g in (32, 64, 128) if all(k % g == 0 for k in in_features)]
    if ok:
        return f"group sizes that divide every layer: {', '.join(map(str, ok))}"
    return "no standard group size (32, 64, 128) divides every layer; pass skip_indivisible / --skip-indivisible"


def plan_conversion(
    model: nn.Module, config: AWQConfig, spec: ArchSpec, skip_indivisible: bool
) -> tuple[str, nn.ModuleList, dict[str, bool], list[str]]:
    """Which linears of the decoder layers are quantized. Raises on indivisible shapes unless asked to skip."""
    layers_path, layers = find_decoder_layers(model, spec)
    decision: dict[str, bool] = {}
    skipped: list[str] = []
    bad: list[tuple[str, nn.Linear]] = []
    for i, layer in enumerate(layers):
        for name in _linear_names(layer):
            qual = f"{layers_path}.{i}.{name}"
            mod = layer.get_submodule(name)
            assert isinstance(mod, nn.Linear)
            if config.skips(qual) or _matches(name, spec.not_convert):
                decision[qual] = False
                continue
            if mod.in_features % config.group_size or mod.out_features % 8:
                bad.append((qual, mod))
                decision[qual] = False
                skipped.append(qual)
                continue
            decision[qual] = True
    if bad and not skip_indivisible:
        qual, mod = bad[0]
        all_k = [m.in_features for m in layers[0].modules() if isinstance(m, nn.Linear)]
        raise FastAWQError(
            f"{qual} has in_features={mod.in_features}, out_features={mod.out_features}: the group size "
            f"{config.group_size} must divide in_features (and out_features must be a multiple of 8)"
            + (f"; {len(bad) - 1} more layers are affected" if len(bad) > 1 else ""),
            hint=_divisor_hint(all_k)
            + ", or keep such layers unquantized with skip_indivisible=True (CLI: --skip-indivisible)",
        )
    if not any(decision.values()):
        raise FastAWQError(
            "no linear layer is left to quantize",
            hint="check modules_to_not_convert and the group size",
        )
    return layers_path, layers, decision, skipped


@contextmanager
def _on_device(modules: list[nn.Module], device: torch.device) -> Iterator[None]:
    """Temporarily move the given modules' *own* parameters and buffers to ``device``."""
    saved: list[tuple[nn.Module, str, bool, torch.device]] = []
    seen: set[int] = set()  # tied tensors are moved (and restored) once
    for mod in modules:
        for key, param in mod._parameters.items():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            saved.append((mod, key, True, param.device))
            param.data = param.data.to(device)
        for key, buf in mod._buffers.items():
            if buf is None or id(buf) in seen:
                continue
            seen.add(id(buf))
            saved.append((mod, key, False, buf.device))
            mod._buffers[key] = buf.to(device)
    try:
        yield
    finally:
        for mod, key, is_param, dev in reversed(saved):
            if is_param:
                p = mod._parameters[key]
                assert p is not None
                p.data = p.data.to(dev)
            else:
                b = mod._buffers[key]
                assert b is not None
                mod._buffers[key] = b.to(dev)


def _outside(model: nn.Module, layers: nn.ModuleList) -> list[nn.Module]:
    inside = {id(m) for m in layers.modules()}
    return [m for m in model.modules() if id(m) not in inside]


@torch.no_grad()
def capture_inputs(
    model: nn.Module,
    layers: nn.ModuleList,
    calib_ids: torch.Tensor,
    device: torch.device,
    batch_size: int,
    offload: torch.device,
) -> list[_Chunk]:
    """Inputs of the first decoder layer for each chunk of calibration blocks.

    Layers that build their own attention mask / rotary embedding kind (``attention_type``)
    get the keyword arguments of the first layer of their kind.
    """
    types = [getattr(layer, "attention_type", None) for layer in layers]
    first_of: dict[Any, int] = {}
    for i, t in enumerate(types):
        first_of.setdefault(t, i)
    last = max(first_of.values())
    chunks: list[_Chunk] = []
    current: dict[str, Any] = {}

    def make_hook(index: int) -> Callable[..., None]:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            kw = dict(kwargs)
            hidden = args[0] if args else kw.pop("hidden_states")
            if index == 0:
                current["hidden"] = hidden
            current.setdefault("kwargs", {})[types[index]] = kw
            if index == last:
                raise _Stop

        return hook

    handles = [
        layers[i].register_forward_pre_hook(make_hook(i), with_kwargs=True) for i in sorted(set(first_of.values()))
    ]
    moved = _outside(model, layers) + [m for layer in layers[: last + 1] for m in layer.modules()]
    try:
        with _on_device(moved, device):
            for start in range(0, calib_ids.shape[0], batch_size):
                ids = calib_ids[start : start + batch_size].to(device)
                current.clear()
                try:
                    model(input_ids=ids, use_cache=False)
                except _Stop:
                    pass
                if "hidden" not in current:
                    raise FastAWQError(
                        f"{type(model).__name__}'s forward pass never reached its first decoder layer",
                        hint="this architecture is not supported yet; please report it",
                    )
                chunks.append(_Chunk(current["hidden"].to(offload), current["kwargs"]))
    finally:
        for h in handles:
            h.remove()
    return chunks


def _check_finite_weights(layer: nn.Module, prefix: str) -> None:
    for name, p in layer.named_parameters():
        if not torch.isfinite(p).all():
            raise FastAWQError(
                f"weight {prefix}.{name} contains NaN or Inf",
                hint="the model checkpoint is damaged or was loaded in a dtype too small for it; "
                "load it in float32 or bfloat16",
            )


def _run_linear(lin: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [lin(x) for x in inputs]


def _run_calls(target: nn.Module, calls: list[LayerCall]) -> list[torch.Tensor]:
    return [first_tensor(c.run(target)) for c in calls]


def _check_fold(
    layer: nn.Module, prefix: str, chunk: _Chunk, expected: _Chunk, attn_type: Any, dev: torch.device
) -> None:
    """Folding scales is exact in real arithmetic: the layer's output must not move beyond rounding."""
    out = first_tensor(LayerCall((chunk.hidden.to(dev),), chunk.kwargs[attn_type]).run(layer)).float()
    ref = expected.hidden.to(dev).float()
    err = float((out - ref).norm()) / max(float(ref.norm()), 1e-12)
    dtype = next(layer.parameters()).dtype
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    if not err <= tol:
        raise FastAWQError(
            f"folding the AWQ scales changed the output of {prefix} (relative error {err:.2e} > {tol:.0e}); "
            "the discovered scaling groups are wrong for this architecture",
            hint="please report this with the model's config.json; an entry in fastawq.arch.overrides can forbid "
            "the pair",
        )


def _signature(layer: nn.Module) -> tuple[Any, ...]:
    return (type(layer),) + tuple(
        (n, tuple(m.weight.shape)) for n, m in layer.named_modules() if isinstance(m, nn.Linear)
    )


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _mean_abs(xs: list[torch.Tensor]) -> torch.Tensor:
    total = None
    count = 0
    for x in xs:
        flat = x.reshape(-1, x.shape[-1])
        part = flat.abs().float().sum(dim=0)
        total = part if total is None else total + part
        count += flat.shape[0]
    assert total is not None
    return total / max(count, 1)


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    calib_ids: torch.Tensor,
    config: AWQConfig,
    options: SearchOptions | None = None,
    *,
    device: torch.device | str | None = None,
    offload_device: torch.device | str = "cpu",
    batch_size: int = 8,
    skip_indivisible: bool = False,
    pack: bool = True,
    fold_only: bool = False,
    progress: bool | None = None,
) -> QuantizeResult:
    """Quantize ``model`` in place with AWQ.

    ``calib_ids`` is an int64 tensor [n_blocks, seq_len] (see :mod:`fastawq.calib`). With
    ``pack=True`` the quantized linears become :class:`~fastawq.nn.AWQLinear` modules; with
    ``pack=False`` they stay ``nn.Linear`` holding the dequantized weights (for comparisons).
    ``fold_only=True`` searches and folds the scales but neither clips nor quantizes: the model
    must then compute exactly what it computed before.
    """
    options = options or SearchOptions()
    if config.version is not Layout.GEMM:
        raise FastAWQError(
            f"quantizing to the {config.version.value} layout is not supported",
            hint="use version 'GEMM'; other layouts can be produced from it by conversion",
        )
    if calib_ids.dim() != 2 or calib_ids.numel() == 0:
        raise FastAWQError(
            f"calibration data must be a non-empty [n_blocks, seq_len] tensor of token ids, got shape "
            f"{tuple(calib_ids.shape)}",
            hint="build it with fastawq.calib.calibration_blocks",
        )
    dev = torch.device(device) if device is not None else default_device()
    offload = torch.device(offload_device)
    show = sys.stderr.isatty() if progress is None else progress
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    spec = arch_spec(model_type)
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()

    layers_path, layers, decision, skipped = plan_conversion(model, config, spec, skip_indivisible)
    out_config = config.with_not_converted(skipped)
    for qual, quantize in decision.items():
        if quantize and out_config.skips(qual):
            raise FastAWQError(
                f"modules_to_not_convert {list(out_config.modules_to_not_convert or ())} would also match "
                f"{qual}, which is quantized; serving engines would then load it wrongly",
                hint="use more specific names in modules_to_not_convert",
            )

    chunks = capture_inputs(model, layers, calib_ids, dev, batch_size, offload)
    types = [getattr(layer, "attention_type", None) for layer in layers]
    plans: dict[tuple[Any, ...], LayerPlan] = {}
    records: list[LayerRecord] = []

    from tqdm.auto import tqdm

    bar = tqdm(total=len(layers), desc="AWQ", unit="layer", disable=not show, dynamic_ncols=True)
    try:
        for i, layer in enumerate(layers):
            lt = time.perf_counter()
            prefix = f"{layers_path}.{i}"
            home = next(layer.parameters()).device
            layer.to(dev)
            _check_finite_weights(layer, prefix)
            record = LayerRecord(index=i, seconds=0.0)
            chunks = _process_layer(
                layer,
                prefix,
                chunks,
                types[i],
                dev,
                offload,
                config,
                options,
                spec,
                decision,
                plans,
                record,
                pack,
                fold_only,
            )
            layer.to(home)
            record.seconds = time.perf_counter() - lt
            records.append(record)
            bar.update(1)
    finally:
        bar.close()
        if was_training:
            model.train()

    quantized = [q for q, d in decision.items() if d]
    not_converted = [q for q, d in decision.items() if not d]
    return QuantizeResult(
        config=out_config,
        options=options,
        layers_path=layers_path,
        quantized=quantized,
        not_converted=not_converted,
        records=records,
        seconds=time.perf_counter() - t0,
        n_calib_tokens=int(calib_ids.numel()),
    )


def _process_layer(
    layer: nn.Module,
    prefix: str,
    chunks: list[_Chunk],
    attn_type: Any,
    dev: torch.device,
    offload: torch.device,
    config: AWQConfig,
    options: SearchOptions,
    spec: ArchSpec,
    decision: dict[str, bool],
    plans: dict[tuple[Any, ...], LayerPlan],
    record: LayerRecord,
    pack: bool,
    fold_only: bool,
) -> list[_Chunk]:
    def quantize(name: str) -> bool:
        return decision.get(f"{prefix}.{name}", False)

    sig = _signature(layer)
    if sig not in plans:
        first = LayerCall((chunks[0].hidden.to(dev),), chunks[0].kwargs[attn_type])
        plans[sig] = discover_layer(layer, first, spec)
        log.info("%s scaling groups:\n  %s", prefix, "\n  ".join(plans[sig].describe()))
    plan = plans[sig]

    # one pass: record linear inputs and inspected modules' calls; outputs feed the next layer
    containers = {g.inspect for g in plan.groups if g.inspect not in plan.linears and g.inspect != ""}
    lin_inputs: dict[str, list[torch.Tensor]] = {n: [] for n in plan.linears}
    calls: dict[str, list[LayerCall]] = {n: [] for n in containers}
    layer_calls: list[LayerCall] = []
    handles = []
    for name in plan.linears:
        handles.append(
            layer.get_submodule(name).register_forward_hook(
                lambda _m, args, _o, name=name: lin_inputs[name].append(args[0])
            )
        )
    for name in containers:
        handles.append(
            layer.get_submodule(name).register_forward_pre_hook(
                lambda _m, args, kwargs, name=name: calls[name].append(LayerCall(args, dict(kwargs))),
                with_kwargs=True,
            )
        )
    next_chunks: list[_Chunk] = []
    try:
        for chunk in chunks:
            call = LayerCall((chunk.hidden.to(dev),), chunk.kwargs[attn_type])
            layer_calls.append(call)
            out = first_tensor(call.run(layer))
            if not torch.isfinite(out).all():
                raise FastAWQError(
                    f"the output of {prefix} contains NaN or Inf on the calibration data",
                    hint="the activations overflow in this dtype: load the model in bfloat16 or float32",
                )
            next_chunks.append(_Chunk(out.to(offload), chunk.kwargs))
    finally:
        for h in handles:
            h.remove()

    # scale search on the unmodified layer, then fold every group
    results = []
    for g in plan.groups:
        mods = [layer.get_submodule(n) for n in g.linears]
        mask = [quantize(n) for n in g.linears]
        if not any(mask):
            continue
        run: Callable[[], list[torch.Tensor]]
        if g.inspect == g.linears[0] and len(g.linears) == 1:
            run = functools.partial(_run_linear, mods[0], lin_inputs[g.linears[0]])
        else:
            target = layer.get_submodule(g.inspect) if g.inspect else layer
            run = functools.partial(_run_calls, target, calls[g.inspect] if g.inspect else layer_calls)

        x_mean = _mean_abs(lin_inputs[g.linears[0]])
        reference = run()
        weights = [m.weight for m in mods]
        try:
            res = search_scale(
                run=run,
                reference=reference,
                weights=weights,  # type: ignore[arg-type]
                quantize_mask=mask,
                x_mean=x_mean,
                bits=config.bits,
                group_size=config.group_size,
                zero_point=config.zero_point,
                options=options,
            )
        except SearchFailed as exc:
            raise FastAWQError(
                f"AWQ scale search failed in {prefix} for {g.prev} -> {', '.join(g.linears)}: {exc}",
                hint="the layer's activations or weights are not finite in this dtype; try loading the model "
                "in float32 or bfloat16",
            ) from None
        del reference
        results.append((g, res))
        record.groups.append(
            {
                "prev": g.prev,
                "kind": g.kind.value,
                "linears": list(g.linears),
                "inspect": g.inspect or "<layer>",
                "alpha": res.alpha,
                "loss_rtn": res.loss_rtn,
                "loss_awq": res.loss_best,
            }
        )
    input_scale: dict[str, torch.Tensor] = {}
    for g, res in results:
        divide_prev(layer.get_submodule(g.prev), g.kind, res.scales)
        for n in g.linears:
            multiply_next(layer.get_submodule(n), res.scales)  # type: ignore[arg-type]
            input_scale[n] = res.scales
    _check_fold(layer, prefix, chunks[0], next_chunks[0], attn_type, dev)
    if fold_only:
        return next_chunks

    # clip search and quantization, per linear
    quantized: dict[str, QuantizedWeight] = {}
    for name in plan.linears:
        if not quantize(name):
            record.linears[name] = {"quantized": False}
            continue
        lin = layer.get_submodule(name)
        assert isinstance(lin, nn.Linear)
        info: dict[str, Any] = {"quantized": True}
        if options.apply_clip and not any(p in name for p in spec.no_clip):
            x = sample_tokens(lin_inputs[name], options.clip_sample_tokens)
            if name in input_scale:
                x = x / input_scale[name].to(x.device, x.dtype)
            before = lin.weight.detach().float().view(lin.out_features, -1, config.group_size).abs().amax(-1)
            best = search_clip(
                lin.weight.data,
                x,
                bits=config.bits,
                group_size=config.group_size,
                zero_point=config.zero_point,
                options=options,
            )
            apply_clip(lin.weight, best, config.group_size)
            ratio = best / before.clamp(min=1e-12)
            info["clip_mean"] = float(ratio.mean())
            info["clip_min"] = float(ratio.min())
        qw = quantize_weight(
            lin.weight.data, bits=config.bits, group_size=config.group_size, zero_point=config.zero_point
        )
        # the layer computes with exactly the weights a reader of the checkpoint will see
        lin.weight.data.copy_(qw.dequantize(torch.float32).to(lin.weight.dtype))
        quantized[name] = qw
        record.linears[name] = info
    if options.error_propagation:
        next_chunks = [
            _Chunk(first_tensor(LayerCall((c.hidden.to(dev),), c.kwargs[attn_type]).run(layer)).to(offload), c.kwargs)
            for c in chunks
        ]
    if pack:
        for name, qw in quantized.items():
            lin = layer.get_submodule(name)
            assert isinstance(lin, nn.Linear)
            _set_module(layer, name, AWQLinear.from_quantized(qw, lin.bias, bias_dtype=lin.weight.dtype))
    return next_chunks


@torch.no_grad()
def rtn_quantize(
    model: nn.Module, config: AWQConfig, *, skip_indivisible: bool = False, pack: bool = False
) -> list[str]:
    """Round-to-nearest baseline: quantize every convertible linear of the decoder layers with no
    scale or clip search. Returns the quantized module names."""
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    _, _, decision, _ = plan_conversion(model, config, arch_spec(model_type), skip_indivisible)
    done = []
    for qual, convert in decision.items():
        if not convert:
            continue
        lin = model.get_submodule(qual)
        assert isinstance(lin, nn.Linear)
        qw = quantize_weight(
            lin.weight.data, bits=config.bits, group_size=config.group_size, zero_point=config.zero_point
        )
        if pack:
            _set_module(model, qual, AWQLinear.from_quantized(qw, lin.bias, bias_dtype=lin.weight.dtype))
        else:
            lin.weight.data.copy_(qw.dequantize(torch.float32).to(lin.weight.dtype))
        done.append(qual)
    return done
