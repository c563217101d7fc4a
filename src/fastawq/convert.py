"""Checkpoint formats: detect, read as AWQ GEMM, convert between AWQ GEMM, GEMV and compressed-tensors.

Conversion streams one shard at a time (a module whose tensors straddle two shards waits for the
second), writes into a temporary folder renamed at the end, and is exact: GEMM → CT → GEMM and
GEMM → GEMV → GEMM give back the same bytes. The source's quantization_config is kept in
``fastawq_convert.json`` so converting back restores it exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fastawq.checkpoint import (
    INDEX_FILE,
    _replace_dir,
    _shard_files,
    check_output_dir,
    parameters_on_meta,
    read_quant_config,
)
from fastawq.config import AWQConfig, Layout
from fastawq.errors import FastAWQError
from fastawq.format import conversions as conv

AWQ_GEMM = "awq-gemm"
GEMV = "gemv"
CT = "compressed-tensors"
FORMATS = (AWQ_GEMM, GEMV, CT)
SIDECAR = "fastawq_convert.json"

_NAMES = {AWQ_GEMM: conv.GEMM_NAMES, GEMV: conv.GEMV_NAMES, CT: conv.CT_NAMES}
_REQUIRED = {AWQ_GEMM: conv.GEMM_NAMES, GEMV: conv.GEMV_NAMES, CT: ("weight_packed", "weight_scale", "weight_shape")}


def is_quantized_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True for a folder fastawq loads as quantized: AWQ (any layout, also a legacy ``quant_config.json``)
    or compressed-tensors; False for full-precision models, files, hub ids and broken configs."""
    root = Path(path)
    cfg = root / "config.json"
    if not cfg.is_file():
        return False
    if (root / "quant_config.json").is_file():
        return True
    try:
        q = json.loads(cfg.read_text()).get("quantization_config") or {}
    except json.JSONDecodeError:
        return False
    return str(q.get("quant_method", "")).lower() in ("awq", CT)


def read_format(path: Path) -> tuple[dict[str, Any], str, AWQConfig]:
    """(config.json, format name, the equivalent AWQ config) of a quantized checkpoint folder."""
    cfg_file = path / "config.json"
    if cfg_file.is_file():
        try:
            cfg = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise FastAWQError(f"{cfg_file} is not valid JSON: {exc}") from None
        q = cfg.get("quantization_config") or {}
        if q.get("quant_method") == "compressed-tensors":
            return cfg, CT, ct_to_awq_config(q, path)
    cfg, awq = read_quant_config(path)
    return cfg, (GEMV if awq.version is Layout.GEMV else AWQ_GEMM), awq


def ct_to_awq_config(q: dict[str, Any], path: Path | None = None) -> AWQConfig:
    if q.get("format") != "pack-quantized":
        raise FastAWQError(
            f"compressed-tensors format {q.get('format')!r} is not supported",
            hint="fastawq reads the 4-bit 'pack-quantized' format (llm-compressor W4A16)",
        )
    groups = q.get("config_groups") or {}
    weights = [g.get("weights") or {} for g in groups.values()]
    if len(weights) != 1:
        raise FastAWQError(
            f"the compressed-tensors config has {len(weights)} config groups; fastawq reads exactly one",
            hint="mixed-precision compressed-tensors checkpoints are not supported",
        )
    w = weights[0]
    if w.get("num_bits") != 4 or w.get("type") != "int" or w.get("strategy") != "group" or not w.get("group_size"):
        raise FastAWQError(
            f"compressed-tensors weights {w} are not 4-bit integer groups",
            hint="fastawq reads W4A16 group quantization (num_bits 4, type int, strategy group)",
        )
    if path is not None and (path / SIDECAR).is_file():
        saved = json.loads((path / SIDECAR).read_text()).get("quantization_config")
        if saved and saved.get("group_size", saved.get("q_group_size")) == w["group_size"]:
            return dataclasses.replace(AWQConfig.from_dict(saved), version=Layout.GEMM)
    return AWQConfig(group_size=int(w["group_size"]), zero_point=not w.get("symmetric", True))


def ct_quant_config(awq: AWQConfig, ignore: list[str]) -> dict[str, Any]:
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": 4,
                    "type": "int",
                    "symmetric": not awq.zero_point,
                    "strategy": "group",
                    "group_size": awq.group_size,
                    "dynamic": False,
                    "actorder": None,
                    "observer": "minmax",
                    "observer_kwargs": {},
                },
                "input_activations": None,
                "output_activations": None,
                "format": "pack-quantized",
            }
        },
        "ignore": ignore,
        "kv_cache_scheme": None,
    }


def iter_modules(
    files: list[Path], fmt: str, zero_point: bool, device: str = "cpu"
) -> Iterator[tuple[str, dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]]:
    """Per shard: (file name, plain tensors, {module: its quantized tensors in ``fmt`` naming}).

    A quantized module's tensors are held back until all of them have been read.
    """
    from safetensors.torch import load_file

    names = _NAMES[fmt]
    required = _REQUIRED[fmt] + (("weight_zero_point",) if fmt == CT and zero_point else ())
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for f in files:
        tensors = load_file(str(f), device=device)
        plain: dict[str, torch.Tensor] = {}
        for key, t in tensors.items():
            owner, _, attr = key.rpartition(".")
            if attr in names:
                pending.setdefault(owner, {})[attr] = t
            else:
                plain[key] = t
        ready = {}
        for owner, parts in list(pending.items()):
            if all(n in parts for n in required):
                ready[owner] = pending.pop(owner)
        yield f.name, plain, ready
    if pending:
        owner, parts = next(iter(pending.items()))
        raise FastAWQError(
            f"quantized layer {owner} is incomplete: has {sorted(parts)}, needs {list(required)}",
            hint="the checkpoint is damaged or not in the format its config names",
        )


def to_gemm(fmt: str, parts: dict[str, torch.Tensor], group_size: int) -> dict[str, torch.Tensor]:
    if fmt == AWQ_GEMM:
        return {n: parts[n] for n in conv.GEMM_NAMES}
    if fmt == GEMV:
        return conv.gemv_to_gemm(parts["qweight"], parts["qzeros"], parts["scales"], group_size)
    return conv.ct_to_gemm(parts)


def from_gemm(fmt: str, gemm: dict[str, torch.Tensor], awq: AWQConfig) -> dict[str, torch.Tensor]:
    if fmt == AWQ_GEMM:
        return gemm
    if fmt == GEMV:
        return conv.gemm_to_gemv(gemm["qweight"], gemm["qzeros"], gemm["scales"])
    return conv.gemm_to_ct(gemm["qweight"], gemm["qzeros"], gemm["scales"], symmetric=not awq.zero_point)


def _unquantized_linears(path: Path, quantized: set[str]) -> list[str]:
    """Names of the model's nn.Linear layers that are not quantized (compressed-tensors ``ignore``)."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        hf = AutoConfig.from_pretrained(str(path))
        if hasattr(hf, "quantization_config"):
            delattr(hf, "quantization_config")
        with parameters_on_meta():
            model = AutoModelForCausalLM.from_config(hf)
    except Exception:  # an architecture transformers cannot build: the usual answer
        return ["lm_head"]
    return sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in quantized)


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    to: str,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write ``src`` (any supported format) as ``to`` into ``dst``; exact for every pair of formats.

    ``progress``: a bar over the shards (default: only when stderr is a terminal).
    """
    import sys

    from safetensors.torch import save_file
    from tqdm import tqdm

    if to not in FORMATS:
        raise FastAWQError(f"unknown target format {to!r}", hint=f"choose one of {', '.join(FORMATS)}")
    root, out = Path(src), Path(dst)
    cfg, fmt, awq = read_format(root)
    if fmt == to:
        raise FastAWQError(f"{root} is already in the {to} format", hint="copy the folder instead")
    if to == GEMV and awq.group_size < 32:
        raise FastAWQError(f"the GEMV layout has no group size {awq.group_size}", hint="use awq-gemm")
    if out.resolve() == root.resolve():
        raise FastAWQError("the output folder is the input folder", hint="convert into a new folder")
    check_output_dir(out, overwrite)
    files = _shard_files(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        weight_map: dict[str, str] = {}
        total = 0
        quantized: set[str] = set()
        show = sys.stderr.isatty() if progress is None else progress
        bar = tqdm(total=len(files), desc=f"converting to {to}", unit="shard", disable=not show)
        for fname, plain, modules in iter_modules(files, fmt, awq.zero_point):
            shard = dict(plain)
            for owner, parts in modules.items():
                quantized.add(owner)
                gemm = to_gemm(fmt, parts, awq.group_size)
                for attr, t in from_gemm(to, gemm, awq).items():
                    shard[f"{owner}.{attr}"] = t.contiguous()
            save_file(shard, str(tmp / fname), metadata={"format": "pt"})
            for key, t in shard.items():
                weight_map[key] = fname
                total += t.numel() * t.element_size()
            bar.update(1)
        bar.close()
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        sidecar = json.loads((root / SIDECAR).read_text()) if (root / SIDECAR).is_file() else {}
        source_q = cfg.get("quantization_config")
        original = sidecar.get("quantization_config") or (source_q if fmt != CT and source_q else awq.to_dict())
        new_cfg = dict(cfg)
        if to == CT:
            new_cfg["quantization_config"] = ct_quant_config(awq, _unquantized_linears(root, quantized))
        else:
            qdict = dict(original)
            want = "gemv" if to == GEMV else "gemm"
            if str(qdict.get("version", "gemm")).lower() != want:
                qdict["version"] = want
            new_cfg["quantization_config"] = qdict
        (tmp / "config.json").write_text(json.dumps(new_cfg, indent=2) + "\n")
        if to != AWQ_GEMM:  # remember the AWQ config so that converting back restores it exactly
            (tmp / SIDECAR).write_text(json.dumps({"from": fmt, "quantization_config": original}, indent=2) + "\n")
        skip = {"config.json", INDEX_FILE, SIDECAR, "quant_config.json"} | {f.name for f in files}
        for item in root.iterdir():
            if item.name in skip or item.suffix == ".safetensors":
                continue
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
