"""The short table of per-architecture exceptions to what discovery finds.

Most decoder-only models need no entry: their decoder layers are found as the largest stack of
identical blocks and their scaling groups are discovered by running a layer. An entry is needed
only where behaviour cannot be inferred, e.g. a router that must stay in full precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: query/key projections: their error is amplified by the softmax, so the reference skips their clip search
DEFAULT_NO_CLIP: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "query",
    "key",
    "qkv",
    "Wqkv",
    "q_a_proj",
    "kv_a_proj",
)

#: always kept in full precision (matched against the name *inside* a decoder layer):
#: MoE routers are called ``gate`` (not ``gate_proj``) by convention
DEFAULT_NOT_CONVERT: tuple[str, ...] = ("mlp.gate", "block_sparse_moe.gate", "router", "shared_expert_gate")


@dataclass(frozen=True)
class ArchSpec:
    """What fastawq needs to know about an architecture beyond what it can discover."""

    #: dotted path of the decoder-layer ModuleList (None: find it)
    layers_path: str | None = None
    #: linear-name fragments that get no clip search
    no_clip: tuple[str, ...] = DEFAULT_NO_CLIP
    #: in-layer names (exact suffix match) never quantized; still compensated when scaled
    not_convert: tuple[str, ...] = DEFAULT_NOT_CONVERT
    #: (prev, linear) pairs discovery may find but that must not be scaled together
    forbid_pairs: tuple[tuple[str, str], ...] = field(default_factory=tuple)


#: model_type → spec; absent types use ``ArchSpec()``. Families known to work with the defaults
#: are listed so `fastawq` can say which architectures were tested.
OVERRIDES: dict[str, ArchSpec] = {
    "llama": ArchSpec(),
    "mistral": ArchSpec(),
    "qwen2": ArchSpec(),
    "qwen3": ArchSpec(),
}


def arch_spec(model_type: str) -> ArchSpec:
    return OVERRIDES.get(model_type, ArchSpec())


def tested_architectures() -> list[str]:
    return sorted(OVERRIDES)
