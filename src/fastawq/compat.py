"""AutoAWQ-compatible API: ``from fastawq import AutoAWQForCausalLM``.

A thin layer over :mod:`fastawq.api` that keeps AutoAWQ users' code working::

    model = AutoAWQForCausalLM.from_pretrained(path)
    model.quantize(tokenizer, quant_config={"zero_point": True, "q_group_size": 128, "w_bit": 4, "version": "GEMM"})
    model.save_quantized(out_dir); tokenizer.save_pretrained(out_dir)
    model = AutoAWQForCausalLM.from_quantized(out_dir)
    model.generate(**inputs, max_new_tokens=50)

AutoAWQ options that do not apply (kernel fusion, ``export_compatible``, ``max_chunk_memory``…)
are accepted and ignored with a one-time notice.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fastawq.algo.search import SearchOptions
from fastawq.api import CalibData, load_quantized, quantize, save_quantized
from fastawq.config import AWQConfig
from fastawq.errors import FastAWQError
from fastawq.loading import load_pretrained
from fastawq.pipeline import QuantizeResult

log = logging.getLogger(__name__)

_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "auto": None,
}


def _dtype(value: Any) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value in _DTYPES:
        return _DTYPES[value]
    raise FastAWQError(f"unknown dtype {value!r}", hint=f"use one of {', '.join(_DTYPES)}")


def _ignored(names: list[str]) -> None:
    if names:
        log.warning("fastawq ignores these AutoAWQ options: %s", ", ".join(sorted(names)))


def _shard_bytes(shard_size: str | int) -> int:
    if isinstance(shard_size, int):
        return shard_size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", shard_size.upper())
    if not m:
        raise FastAWQError(f"cannot read shard_size={shard_size!r}", hint="use e.g. '5GB' or '500MB'")
    return int(float(m.group(1)) * {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3}[m.group(2)])


class AWQModel(nn.Module):
    """What ``AutoAWQForCausalLM.from_pretrained / from_quantized`` return: wraps a transformers model."""

    def __init__(
        self,
        model: nn.Module,
        *,
        tokenizer: Any = None,
        source: str | None = None,
        quant_config: AWQConfig | None = None,
        is_quantized: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.awq_config = quant_config
        self.is_quantized = is_quantized
        self.result: QuantizeResult | None = None

    @property
    def quant_config(self) -> dict[str, Any]:
        return self.awq_config.to_dict() if self.awq_config else {}

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode():
            return self.model.generate(*args, **kwargs)  # type: ignore[operator]

    def quantize(
        self,
        tokenizer: Any = None,
        quant_config: Mapping[str, Any] | AWQConfig | None = None,
        calib_data: CalibData = "pileval",
        split: str | None = None,
        text_column: str | None = None,
        duo_scaling: bool = True,
        export_compatible: bool = False,
        apply_clip: bool = True,
        n_parallel_calib_samples: int | None = None,
        max_calib_samples: int = 128,
        max_calib_seq_len: int = 512,
        max_chunk_memory: int | None = None,
        n_grid: int = 20,
        error_propagation: bool = True,
        skip_indivisible: bool = False,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> None:
        if self.is_quantized:
            raise FastAWQError("this model is already quantized", hint="load the full-precision model to quantize it")
        ignored = [k for k in kwargs] + (["export_compatible"] if export_compatible else [])
        ignored += ["max_chunk_memory"] if max_chunk_memory is not None else []
        _ignored(ignored)
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        self.result = quantize(
            self.model,
            tokenizer,
            quant_config,
            calib_data=calib_data,
            max_calib_samples=max_calib_samples,
            max_calib_seq_len=max_calib_seq_len,
            split=split,
            text_column=text_column,
            options=SearchOptions(
                n_grid=n_grid, duo_scaling=duo_scaling, apply_clip=apply_clip, error_propagation=error_propagation
            ),
            device=device,
            batch_size=n_parallel_calib_samples or 8,
            skip_indivisible=skip_indivisible,
        )
        self.awq_config = self.result.config
        self.is_quantized = True

    def save_quantized(
        self,
        save_dir: str | os.PathLike[str],
        safetensors: bool = True,
        shard_size: str | int = "5GB",
        overwrite: bool = True,
    ) -> None:
        if not safetensors:
            raise FastAWQError("fastawq writes safetensors only", hint="drop safetensors=False")
        if not self.is_quantized or self.awq_config is None:
            raise FastAWQError(
                "the model is not quantized yet",
                hint="call model.quantize(tokenizer, quant_config=...) first",
            )
        save_quantized(
            self.model,
            save_dir,
            self.result if self.result is not None else self.awq_config,
            source_dir=self.source if self.source and os.path.isdir(self.source) else None,
            max_shard_bytes=_shard_bytes(shard_size),
            overwrite=overwrite,
        )


class AutoAWQForCausalLM:
    """Factory with AutoAWQ's class methods."""

    def __init__(self) -> None:
        raise OSError("use AutoAWQForCausalLM.from_pretrained or AutoAWQForCausalLM.from_quantized")

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | os.PathLike[str],
        model_type: str | None = None,
        torch_dtype: Any = None,
        trust_remote_code: bool = False,
        safetensors: bool = True,
        device_map: Any = None,
        low_cpu_mem_usage: bool = True,
        use_cache: bool = False,
        **kwargs: Any,
    ) -> AWQModel:
        dtype = _dtype(torch_dtype if torch_dtype is not None else kwargs.pop("dtype", None))
        _ignored(list(kwargs) + (["device_map"] if device_map else []))
        model, tokenizer, source = load_pretrained(model_path, dtype=dtype, trust_remote_code=trust_remote_code)
        return AWQModel(model, tokenizer=tokenizer, source=source)

    @classmethod
    def from_quantized(
        cls,
        quant_path: str | os.PathLike[str],
        quant_filename: str = "",
        max_seq_len: int = 2048,
        trust_remote_code: bool = False,
        fuse_layers: bool = True,
        use_exllama: bool = False,
        use_exllama_v2: bool = False,
        use_ipex: bool = False,
        batch_size: int = 1,
        safetensors: bool = True,
        device_map: Any = None,
        offload_folder: str | None = None,
        torch_dtype: Any = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> AWQModel:
        kernel = kwargs.pop("kernel", None)  # fastawq's own: force a kernel (see fastawq.kernels.dispatch)
        _ignored(list(kwargs))
        dtype = _dtype(torch_dtype) or torch.float16
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model, qconfig = load_quantized(
            quant_path, device=device, dtype=dtype, trust_remote_code=trust_remote_code, kernel=kernel
        )
        return AWQModel(model, source=str(quant_path), quant_config=qconfig, is_quantized=True)
