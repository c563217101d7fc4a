"""Saving and loading AWQ GEMM checkpoints (safetensors only).

Saving writes everything into a temporary sibling folder and renames it into place at the end,
so an interrupted save leaves nothing half-written. Loading builds the model skeleton with its
parameters on the ``meta`` device, swaps in :class:`~fastawq.nn.AWQLinear` for every module that
has a ``qweight`` in the checkpoint, and assigns the stored tensors directly: peak memory is
about the size of the checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastawq import __version__
from fastawq.config import AWQConfig
from fastawq.errors import FastAWQError
from fastawq.model_card import render_card
from fastawq.nn.qlinear import AWQLinear

RECORD_FILE = "fastawq_record.json"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 5 * 1000**3
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


# ----------------------------------------------------------------------------------- saving


def _unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` without the second name of tied tensors (safetensors stores each once)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...], torch.dtype]] = set()
    for name, t in model.state_dict().items():
        if t.device.type == "meta":
            raise FastAWQError(f"tensor {name} was never loaded (it is on the meta device)")
        key = (
            t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size(),
            tuple(t.shape),
            t.dtype,
        )
        if key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


def _shard(tensors: Mapping[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    return shards


def _config_dict(model: nn.Module, qconfig: AWQConfig, dtype: torch.dtype) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        raise FastAWQError(f"{type(model).__name__} has no Hugging Face config; cannot write config.json")
    data: dict[str, Any] = config.to_dict()
    data.pop("quantization_config", None)
    data["quantization_config"] = qconfig.to_dict()
    dtype_name = str(dtype).removeprefix("torch.")
    data["dtype"] = dtype_name
    data["torch_dtype"] = dtype_name  # transformers 4.x readers
    rope = data.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in data:
        data["rope_theta"] = rope["rope_theta"]  # transformers 4.x readers
    return data


def save_checkpoint(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    qconfig: AWQConfig,
    *,
    tokenizer: Any = None,
    source_dir: str | os.PathLike[str] | None = None,
    record: Mapping[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (with AWQLinear modules) as an AWQ GEMM checkpoint into ``out_dir``.

    ``card``: facts for the README.md model card (``base_model``, ``calibration``, ``perplexity``,
    ``perplexity_data``); the quantization settings and the record are added from the other arguments.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    check_output_dir(out, overwrite)
    if not any(isinstance(m, AWQLinear) for m in model.modules()):
        raise FastAWQError(
            "the model has no quantized layers to save",
            hint="quantize it first (model.quantize(...) / fastawq.quantize)",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        tensors: dict[str, torch.Tensor] = {}
        quantized_prefixes = {n for n, m in model.named_modules() if isinstance(m, AWQLinear)}
        for name, t in _unique_state_dict(model).items():
            owner = name.rsplit(".", 1)[0]
            if owner in quantized_prefixes:
                t = t if t.dtype in (torch.int32, torch.float16) else t.to(torch.float16)
            elif t.is_floating_point():
                t = t.to(dtype)
            tensors[name] = t.detach().to("cpu").contiguous()
        shards = _shard(tensors, max_shard_bytes)
        weight_map: dict[str, str] = {}
        total = 0
        for i, shard in enumerate(shards, start=1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            for name, t in shard.items():
                weight_map[name] = fname
                total += t.numel() * t.element_size()
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(_config_dict(model, qconfig, dtype), indent=2) + "\n")
        gen = getattr(model, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        elif source_dir is not None and Path(source_dir).is_dir():
            for fname in _TOKENIZER_FILES:
                src = Path(source_dir) / fname
                if src.is_file():
                    shutil.copy2(src, tmp / fname)
        if record is not None:
            (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        facts = dict(card or {})
        facts.setdefault("base_model", getattr(getattr(model, "config", None), "_name_or_path", None) or None)
        (tmp / "README.md").write_text(
            render_card(out.name, qconfig, record=record, fastawq_version=__version__, **facts)
        )
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Fail early (before any work) if ``out`` cannot be written."""
    if out.exists() and not out.is_dir():
        raise FastAWQError(f"output path {out} exists and is not a folder", hint="choose another output path")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FastAWQError(
            f"output folder {out} already exists and is not empty",
            hint="choose another folder, or pass overwrite=True (CLI: --overwrite) to replace it",
        )


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


# ---------------------------------------------------------------------------------- loading


def read_quant_config(path: Path) -> tuple[dict[str, Any], AWQConfig]:
    """(config.json as a dict, its AWQ quantization config). Accepts a legacy ``quant_config.json``."""
    if not path.exists():
        raise FastAWQError(f"no such folder: {path}", hint="check the path of the quantized checkpoint")
    if not path.is_dir():
        raise FastAWQError(f"{path} is not a folder", hint="pass the folder that holds config.json")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FastAWQError(f"{path} has no config.json", hint="pass the folder written by save_quantized")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise FastAWQError(f"{cfg_file} is not valid JSON: {exc}") from None
    qdict = cfg.get("quantization_config")
    legacy = path / "quant_config.json"
    if qdict is None and legacy.is_file():
        qdict = json.loads(legacy.read_text())
    if qdict is None:
        raise FastAWQError(
            f"{path} is not an AWQ checkpoint: config.json has no quantization_config",
            hint="to quantize a full-precision model use `fastawq quantize` / AutoAWQForCausalLM.from_pretrained",
        )
    return cfg, AWQConfig.from_dict(qdict)


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create modules with their parameters on ``meta`` (no memory) and their buffers for real.

    Buffers such as rotary ``inv_freq`` are computed at construction and not stored in
    checkpoints, so they must be real; parameters are all loaded from the checkpoint.
    """
    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def _shard_files(path: Path) -> list[Path]:
    index = path / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted({path / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise FastAWQError(f"{path} is incomplete: missing {', '.join(missing)}", hint="copy the whole folder")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        bins = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        raise FastAWQError(
            f"{path} has no .safetensors weights" + (f" (found {', '.join(bins)})" if bins else ""),
            hint="fastawq reads safetensors only; convert pickle checkpoints with a trusted tool first",
        )
    return files


def _safetensors_keys(files: list[Path]) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            keys.update(fh.keys())
    return keys


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float16,
    trust_remote_code: bool = False,
) -> tuple[nn.Module, AWQConfig]:
    """Load an AWQ GEMM checkpoint (fastawq's or AutoAWQ's) as a transformers causal LM."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from fastawq.convert import CT, iter_modules, read_format, to_gemm

    root = Path(path)
    _, fmt, qconfig = read_format(root)  # AWQ GEMM, AWQ GEMV or compressed-tensors pack-quantized
    marker = ".weight_packed" if fmt == CT else ".qweight"
    files = _shard_files(root)
    try:
        hf_config = AutoConfig.from_pretrained(str(root), trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise FastAWQError(
            f"transformers does not know the architecture in {root / 'config.json'}: {exc}",
            hint="upgrade transformers, or pass trust_remote_code=True if you trust the model's own code",
        ) from None
    if hasattr(hf_config, "quantization_config"):
        delattr(hf_config, "quantization_config")
    with parameters_on_meta():
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, trust_remote_code=trust_remote_code)

    keys = _safetensors_keys(files)
    qmodules = sorted(k[: -len(marker)] for k in keys if k.endswith(marker))
    if not qmodules:
        raise FastAWQError(
            f"{root} has a quantization_config but no {marker[1:]} tensors", hint="the checkpoint is damaged"
        )
    for name in qmodules:
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise FastAWQError(
                f"checkpoint tensor {name}{marker} matches no module of {type(model).__name__}"
            ) from None
        if not isinstance(old, nn.Linear):
            raise FastAWQError(f"checkpoint quantizes {name}, which is a {type(old).__name__}, not a Linear")
        new = AWQLinear(
            old.in_features,
            old.out_features,
            group_size=qconfig.group_size,
            bias=f"{name}.bias" in keys,
            bits=qconfig.bits,
            device="meta",
        )
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)

    quantized = set(qmodules)
    problems: list[str] = []
    unexpected: list[str] = []
    for _fname, plain, modules in iter_modules(files, fmt, qconfig.zero_point, device=str(device)):
        items = list(plain.items())
        for qname, parts in modules.items():  # other layouts become the GEMM tensors here, exactly
            items += [(f"{qname}.{attr}", t) for attr, t in to_gemm(fmt, parts, qconfig.group_size).items()]
        for key, tensor in items:
            owner, _, attr = key.rpartition(".")
            try:
                module = model.get_submodule(owner) if owner else model
            except AttributeError:
                unexpected.append(key)
                continue
            if attr in module._parameters:
                target = module._parameters[attr]
            elif attr in module._buffers:
                target = module._buffers[attr]
            else:
                unexpected.append(key)
                continue
            if target is not None and tuple(target.shape) != tuple(tensor.shape):
                problems.append(f"{key}: checkpoint {tuple(tensor.shape)}, model expects {tuple(target.shape)}")
                continue
            if owner not in quantized and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            if attr in module._parameters:
                module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
            else:
                module._buffers[attr] = tensor
    if problems:
        raise FastAWQError(
            f"{root}: {len(problems)} tensors have unexpected shapes, e.g. {problems[0]}",
            hint=f"the checkpoint does not match its config (group size {qconfig.group_size}, {fmt} layout)",
        )
    if unexpected:
        raise FastAWQError(
            f"{root} holds tensors this model has no place for: {', '.join(unexpected[:5])}"
            + (" …" if len(unexpected) > 5 else ""),
            hint="the checkpoint may need a module fastawq does not support yet (e.g. scaled activations)",
        )
    if getattr(hf_config, "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()
    missing = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.device.type == "meta"]
    if missing:
        raise FastAWQError(
            f"{root} is missing tensors: {', '.join(missing[:5])}" + (" …" if len(missing) > 5 else ""),
            hint="the checkpoint is incomplete",
        )
    model.to(device)
    model.eval()
    return model, qconfig
