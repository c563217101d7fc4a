"""The typed quantization config and its round trip to ``quantization_config``.

:class:`AWQConfig` describes *what is on disk* (bits, group size, zero points, layout, which
modules stay in full precision). It is the only thing written into a checkpoint's
``config.json``; how the scales were searched lives in :class:`fastawq.algo.search.SearchOptions`.

``AWQConfig.from_dict`` accepts the keys every AWQ tool writes or reads: the modern
``bits``/``group_size`` and the AutoAWQ-style ``w_bit``/``q_group_size``, ``version`` in any case.
``AWQConfig.from_dict(c.to_dict()) == c`` for every valid config.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fastawq.errors import FastAWQError


class Layout(str, enum.Enum):
    """How the quantized integers of one linear layer lie on disk.

    GEMM: ``qweight`` int32 [K, N/8], k-major; word [k, j] holds columns 8j..8j+7 of row k, nibble i
    holding column ``8j + (0, 2, 4, 6, 1, 3, 5, 7)[i]``; ``qzeros`` int32 [K/G, N/8] packed the same
    way with raw zero points 0..15; ``scales`` fp16 [K/G, N]. This is what vLLM, SGLang,
    transformers and GPTQModel read as ``quant_method: awq, version: gemm``.

    GEMV: ``qweight`` int32 [N, K/8] packed sequentially along K (read support only in a later
    version; listed so configs naming it are recognised).
    """

    GEMM = "gemm"
    GEMV = "gemv"


_KNOWN_KEYS = {
    "quant_method",
    "bits",
    "w_bit",
    "group_size",
    "q_group_size",
    "zero_point",
    "version",
    "modules_to_not_convert",
}


@dataclass(frozen=True)
class AWQConfig:
    """On-disk quantization settings of an AWQ checkpoint."""

    bits: int = 4
    group_size: int = 128
    zero_point: bool = True
    version: Layout = Layout.GEMM
    modules_to_not_convert: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=True)

    def __post_init__(self) -> None:
        if isinstance(self.version, str) and not isinstance(self.version, Layout):
            object.__setattr__(self, "version", _parse_layout(self.version))
        if self.modules_to_not_convert is not None and not isinstance(self.modules_to_not_convert, tuple):
            object.__setattr__(self, "modules_to_not_convert", tuple(self.modules_to_not_convert))
        self.validate()

    def validate(self) -> None:
        if self.bits != 4:
            raise FastAWQError(
                f"w_bit={self.bits} is not supported: the AWQ checkpoint layouts serving engines read "
                "hold 4-bit integers only",
                hint="use w_bit=4 (--w-bit 4)",
            )
        if self.group_size <= 0 or self.group_size % 8 or self.group_size & (self.group_size - 1):
            raise FastAWQError(
                f"group size {self.group_size} is not supported",
                hint="use a power of two from 32 to 128 (serving engines accept 32, 64 and 128)",
            )

    @property
    def max_int(self) -> int:
        return (1 << self.bits) - 1

    def to_dict(self) -> dict[str, Any]:
        """The ``quantization_config`` dict written into ``config.json``."""
        out: dict[str, Any] = {
            "quant_method": "awq",
            "bits": self.bits,
            "group_size": self.group_size,
            "zero_point": self.zero_point,
            "version": self.version.value,
            "modules_to_not_convert": (
                list(self.modules_to_not_convert) if self.modules_to_not_convert is not None else None
            ),
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AWQConfig:
        """Parse a ``quantization_config`` / AutoAWQ ``quant_config`` dict.

        Unknown keys are kept in :attr:`extra` so that writing the config back loses nothing.
        """
        method = data.get("quant_method", "awq")
        if str(method).lower() != "awq":
            raise FastAWQError(
                f"quantization_config has quant_method={method!r}, not 'awq'",
                hint="fastawq reads and writes AWQ checkpoints; convert other formats first",
            )
        bits = _pick(data, "bits", "w_bit", 4)
        group = _pick(data, "group_size", "q_group_size", 128)
        version = data.get("version", "gemm")
        mtnc = data.get("modules_to_not_convert")
        extra = {k: v for k, v in data.items() if k not in _KNOWN_KEYS}
        return cls(
            bits=int(bits),
            group_size=int(group),
            zero_point=bool(data.get("zero_point", True)),
            version=_parse_layout(str(version)),
            modules_to_not_convert=tuple(mtnc) if mtnc is not None else None,
            extra=extra,
        )

    def with_not_converted(self, names: list[str]) -> AWQConfig:
        """A copy with ``names`` added to ``modules_to_not_convert`` (order kept, no duplicates)."""
        if not names:
            return self
        current = list(self.modules_to_not_convert or ())
        current += [n for n in names if n not in current]
        return replace(self, modules_to_not_convert=tuple(current))

    def skips(self, qualified_name: str) -> bool:
        """True if ``qualified_name`` matches ``modules_to_not_convert`` (substring match)."""
        return any(pat in qualified_name for pat in self.modules_to_not_convert or ())


def _pick(data: Mapping[str, Any], key: str, legacy: str, default: int) -> Any:
    if key in data and legacy in data and data[key] != data[legacy]:
        raise FastAWQError(
            f"quantization config sets both {key}={data[key]} and {legacy}={data[legacy]}",
            hint=f"give only one of {key!r} / {legacy!r}",
        )
    return data.get(key, data.get(legacy, default))


def _parse_layout(value: str) -> Layout:
    try:
        return Layout(value.lower())
    except ValueError:
        raise FastAWQError(
            f"unknown AWQ version/layout {value!r}",
            hint="use 'GEMM' (the layout vLLM, SGLang and transformers read)",
        ) from None


def coerce_config(value: AWQConfig | Mapping[str, Any] | None) -> AWQConfig:
    """Accept an :class:`AWQConfig`, an AutoAWQ-style dict, or ``None`` (defaults)."""
    if value is None:
        return AWQConfig()
    if isinstance(value, AWQConfig):
        return value
    if isinstance(value, Mapping):
        return AWQConfig.from_dict(value)
    raise FastAWQError(
        f"quant_config must be a dict or AWQConfig, got {type(value).__name__}",
        hint='pass e.g. {"w_bit": 4, "q_group_size": 128, "zero_point": True, "version": "GEMM"}',
    )
