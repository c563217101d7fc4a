"""Loading full-precision models: a local folder, a GGUF file, or a Hugging Face hub id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastawq.errors import FastAWQError


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", "./", "../", "~"))
        or spec.endswith((".gguf", ".safetensors", ".json"))
        or spec.count("/") > 1
        or (os.sep != "/" and os.sep in spec)
    )


def resolve_source(spec: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(folder or hub id, gguf file name or None) for a model argument."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return str(path.parent), path.name
        raise FastAWQError(
            f"{path} is a file, not a model folder",
            hint="pass the folder holding config.json and *.safetensors, or a .gguf file",
        )
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path), None
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path), ggufs[0]
        raise FastAWQError(
            f"{path} holds no config.json" + (f" and several GGUF files ({', '.join(ggufs)})" if ggufs else ""),
            hint="pass a Hugging Face model folder, or the path of one .gguf file",
        )
    if _looks_like_path(text):
        raise FastAWQError(f"no such file or folder: {text}", hint="check the model path")
    return text, None


def default_dtype() -> torch.dtype:
    return torch.float16 if torch.cuda.is_available() else torch.float32


def load_pretrained(
    spec: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
    load_tokenizer: bool = True,
    **kwargs: Any,
) -> tuple[nn.Module, Any, str]:
    """(model on CPU, tokenizer or None, source folder or hub id)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source, gguf = resolve_source(spec)
    dtype = dtype or default_dtype()
    extra: dict[str, Any] = {"trust_remote_code": trust_remote_code, **kwargs}
    if gguf:
        try:
            import accelerate as _accelerate  # noqa: F401
            import gguf as _gguf  # noqa: F401
        except ImportError:
            raise FastAWQError(
                "loading a GGUF file needs the 'gguf' and 'accelerate' packages", hint="pip install 'fastawq[gguf]'"
            ) from None
        extra["gguf_file"] = gguf
    try:
        config = AutoConfig.from_pretrained(source, **extra)
    except ValueError as exc:
        raise FastAWQError(
            f"unknown architecture in {source}: {exc}",
            hint="upgrade transformers, or pass trust_remote_code=True (--trust-remote-code) if you trust it",
        ) from None
    except OSError as exc:
        local = Path(source).exists()
        raise FastAWQError(
            f"could not load the model config from {source!r}: {str(exc).splitlines()[0]}",
            hint="check the path"
            if local
            else "not a local folder; the hub may be unreachable (offline?) or the "
            "id misspelled — download the model and pass its folder",
        ) from None
    qc = getattr(config, "quantization_config", None)
    qc_method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if qc is not None and not gguf:
        raise FastAWQError(
            f"{source} is already quantized (quant_method={qc_method})",
            hint="load it with from_quantized / `fastawq generate`, or start from the full-precision model",
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
    except ValueError as exc:
        raise FastAWQError(
            f"{source} (model_type={getattr(config, 'model_type', '?')}, "
            f"architectures={getattr(config, 'architectures', None)}) is not a causal language model "
            f"transformers can load: {str(exc).splitlines()[0]}",
            hint="fastawq quantizes decoder-only causal LMs",
        ) from None
    if gguf:
        # transformers attaches a GGUF "quantizer"; the weights are dequantized already
        setattr(model, "hf_quantizer", None)  # noqa: B010
        if hasattr(model.config, "quantization_config"):
            delattr(model.config, "quantization_config")
    tokenizer = None
    if load_tokenizer:
        tok_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if gguf:
            tok_kwargs["gguf_file"] = gguf
        tokenizer = AutoTokenizer.from_pretrained(source, **tok_kwargs)
    model.eval()
    return model, tokenizer, source
