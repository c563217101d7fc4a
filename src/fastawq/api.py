"""The real API: plain functions over a transformers model and a typed config.

model, tok, src = load_pretrained("path/or/model.gguf")
result = quantize(model, tok, AWQConfig(group_size=64), calib_data="builtin")
save_quantized(model, "out/", result, tokenizer=tok)
qmodel, qconfig = load_quantized("out/")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastawq.algo.search import SearchOptions
from fastawq.checkpoint import load_checkpoint, save_checkpoint
from fastawq.config import AWQConfig, coerce_config
from fastawq.errors import FastAWQError
from fastawq.loading import load_pretrained
from fastawq.pipeline import QuantizeResult, quantize_model

CalibData = str | os.PathLike[str] | Sequence[str] | torch.Tensor

__all__ = ["load_pretrained", "load_quantized", "quantize", "save_quantized"]


def calibration_ids(
    tokenizer: Any,
    calib_data: CalibData,
    *,
    max_calib_samples: int = 128,
    max_calib_seq_len: int = 512,
    seed: int = 42,
    split: str | None = None,
    text_column: str | None = None,
    subset: str | None = None,
) -> torch.Tensor:
    """Token blocks [n, seq_len] from any supported calibration source (or a ready tensor)."""
    if isinstance(calib_data, torch.Tensor):
        if calib_data.dim() != 2 or calib_data.dtype not in (torch.int64, torch.int32):
            raise FastAWQError(
                f"a calibration tensor must be integer token ids [n_blocks, seq_len], got {calib_data.dtype} "
                f"{tuple(calib_data.shape)}"
            )
        return calib_data.long()
    if tokenizer is None:
        raise FastAWQError("calibration texts need a tokenizer", hint="pass the model's tokenizer")
    from fastawq.calib import calibration_blocks

    return calibration_blocks(
        calib_data,
        tokenizer,
        n_samples=max_calib_samples,
        seq_len=max_calib_seq_len,
        seed=seed,
        split=split,
        text_column=text_column,
        subset=subset,
    )


def quantize(
    model: nn.Module,
    tokenizer: Any,
    config: AWQConfig | Mapping[str, Any] | None = None,
    *,
    calib_data: CalibData = "pileval",
    max_calib_samples: int = 128,
    max_calib_seq_len: int = 512,
    split: str | None = None,
    text_column: str | None = None,
    subset: str | None = None,
    options: SearchOptions | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 8,
    skip_indivisible: bool = False,
    progress: bool | None = None,
) -> QuantizeResult:
    """Quantize ``model`` in place; returns the result to pass to :func:`save_quantized`."""
    cfg = coerce_config(config)
    ids = calibration_ids(
        tokenizer,
        calib_data,
        max_calib_samples=max_calib_samples,
        max_calib_seq_len=max_calib_seq_len,
        split=split,
        text_column=text_column,
        subset=subset,
    )
    return quantize_model(
        model,
        ids,
        cfg,
        options,
        device=device,
        batch_size=batch_size,
        skip_indivisible=skip_indivisible,
        progress=progress,
    )


def save_quantized(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    result: QuantizeResult | AWQConfig,
    *,
    tokenizer: Any = None,
    source_dir: str | os.PathLike[str] | None = None,
    dtype: torch.dtype = torch.float16,
    max_shard_bytes: int | None = None,
    overwrite: bool = False,
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write the quantized model as an AWQ GEMM checkpoint (plus ``fastawq_record.json`` and a README.md
    model card; ``card`` may add ``base_model``, ``calibration``, ``perplexity``, ``perplexity_data``)."""
    if isinstance(result, QuantizeResult):
        config, record = result.config, result.to_dict()
    else:
        config, record = result, None
    kwargs: dict[str, Any] = {}
    if max_shard_bytes is not None:
        kwargs["max_shard_bytes"] = max_shard_bytes
    return save_checkpoint(
        model,
        out_dir,
        config,
        tokenizer=tokenizer,
        source_dir=source_dir,
        record=record,
        dtype=dtype,
        overwrite=overwrite,
        card=card,
        **kwargs,
    )


def load_quantized(
    path: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float16,
    trust_remote_code: bool = False,
    kernel: str | None = None,
) -> tuple[nn.Module, AWQConfig]:
    """Load an AWQ GEMM checkpoint (fastawq's or AutoAWQ's) and repack it for the kernel that will run it.

    ``kernel``: None/"auto" lets fastawq choose per call (:mod:`fastawq.kernels.dispatch`); a name
    (a key of :data:`fastawq.kernels.dispatch.KERNELS`, e.g. "reference", "triton", "cpu_int4") forces one.
    ``FASTAWQ_KERNEL`` overrides both.
    """
    from fastawq.kernels.dispatch import forced_kernel, prepare

    forced_kernel(kernel)  # an unknown name fails before the (long) load
    model, qconfig = load_checkpoint(path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    prepare(model, dtype, kernel)
    return model, qconfig
